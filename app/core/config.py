"""Service settings: one pydantic-settings class (env prefix FACEID_), one instance, unsafe values refused."""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.security import ApiKey


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEID_", env_file=".env", extra="ignore")

    # storage
    database_url: str = Field("sqlite:///./data/faceid.db", description="sqlite:///path (embedded, in-memory "
                              "index) or postgresql+psycopg://... (pgvector search in the database, stateless replicas)")
    storage_reserve_bytes: int = Field(16 * 2**20, ge=0, description="SQLite: space kept in `<database>.reserve` "
                                       "and given up on a full disk so deletes (and probe evictions) can still run "
                                       "(0: none)")
    db_busy_timeout_s: float = Field(5.0, gt=0, description="wait this long for another writer's lock, "
                                     "then answer 503 database_busy")
    pgvector_ef_search: int = Field(300, ge=1, le=1000, description="PostgreSQL: HNSW candidate list per search "
                                    "(with m 32: recall@1 1.000 and recall@10 0.998 against exact search at 100k "
                                    "faces, 0.993 and 0.929 at 1M; 600: 1.000 and 0.951 at 1M; "
                                    "benchmarks/search.py --backend pgvector)")
    pgvector_exact_below: int = Field(10_000, ge=0, description="PostgreSQL: galleries with fewer vectors of a "
                                      "model version are searched exactly")
    pgvector_hnsw_m: int = Field(32, ge=2, le=100, description="PostgreSQL: HNSW links per node (16 found the "
                                 "right face first for 0.963 of the 1M-face benchmark's searches at ef_search 300, "
                                 "32 for 0.993; the build takes twice as long)")
    pgvector_hnsw_ef_construction: int = Field(128, ge=4, le=1000, description="PostgreSQL: HNSW build candidate list")
    # model
    weights: str = Field("casia-webface", description="registry name or checkpoint file name/path")
    checkpoints_dir: Path = Path("./checkpoints")
    device: str = Field("auto", description="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    precision: str = Field("auto", description="auto (int8 on CPUs with VNNI/AMX when the checkpoint's int8 model "
                           "passes its gate, else as fast), fast (folded batch-norm, channels-last, bf16 on CPUs "
                           "with AVX512-BF16/AMX, bf16/fp16 on CUDA), int8, or fp32 (the network as trained)")
    flip_tta: bool = Field(False, description="embed each face and its mirror image (test-time augmentation): "
                           "LFW 1:N FNIR at FPIR 0.01 0.270 -> 0.258 (1,480 people, 3 photos) for one more embedder "
                           "pass per face; changing it re-embeds the gallery at start-up")
    # matching: the operating point (see app/services/operating_point.py)
    target_fpir: float = Field(0.01, gt=0.0, lt=1.0, description="share of searches for people never enrolled "
                               "that may come back as a match; the threshold follows from it and the gallery size")
    target_far: float = Field(1e-3, gt=0.0, lt=1.0, description="false-accept rate of 1:1 verification")
    gallery_calibration: bool = Field(True, description="also estimate the impostor tail from the gallery's own "
                                      "different-identity pairs and use the more conservative operating point")
    identity_scoring: str = Field("template", pattern="^(template|face)$",
                                  description="score an identity by its template (normalised mean of its faces) "
                                  "or by its best face")
    match_threshold: float | None = Field(None, ge=-1.0, le=1.0,
                                          description="a fixed cosine threshold instead of the target FPIR")
    default_threshold: float = Field(0.51, ge=-1.0, le=1.0,
                                     description="for checkpoints with neither impostor tail nor fixed threshold")
    top_k: int = Field(5, ge=1, le=100)
    # input limits
    max_upload_bytes: int = Field(15 * 1024 * 1024, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=10_000)
    max_images_per_request: int = Field(10, ge=1)
    max_faces_per_image: int = Field(50, ge=1)
    # search quality gate: a face below it is `low_quality`, neither match nor unknown
    # benchmarks/quality.py: at the shipped operating point, searches with 20 px faces missed 86 % of enrolled
    # people and 26 px ones 55 % (false matches did not rise); two in three are missed at about 24 px
    search_min_face_size: int = Field(24, ge=0, description="pixels, shorter side of the face box")
    search_min_detection_score: float = Field(0.0, ge=0.0, le=1.0)
    max_decode_bytes: int = Field(768 * 2**20, ge=2**20, description="decoded image memory all requests may "
                                  "hold at once (estimated from each image's header before decoding)")
    max_decode_bytes_per_request: int = Field(512 * 2**20, ge=2**20, description="decoded image memory one "
                                              "request may hold at once; an image needing more is refused (413)")
    decode_wait_s: float = Field(10.0, ge=0.0, description="how long a request waits for decode memory "
                                 "before it is refused with 503 + Retry-After")
    # enrollment quality gate
    enroll_min_face_size: int = Field(40, ge=1, description="pixels, shorter side of the face box")
    enroll_min_detection_score: float = Field(0.95, ge=0.0, le=1.0)
    # detector
    detector_min_face_size: int = Field(20, ge=8, description="pixels: the smallest face the detector can look for "
                                        "(in the image as detected, after any downscaling to FACEID_MAX_DETECT_SIDE)")
    detect_below_gate: bool = Field(False, description="also look for faces smaller than the search gate "
                                    "(FACEID_SEARCH_MIN_FACE_SIZE), down to FACEID_DETECTOR_MIN_FACE_SIZE, to "
                                    "report them as low_quality; by default detection starts at the gate")
    detector_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    max_detect_side: int = Field(1280, ge=160)
    detector_backend: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="P/R/ONet runtime; auto: onnxruntime on CPU (faster there), torch on CUDA")
    # batching
    batching: bool = True
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.004, ge=0.0)
    max_queue_size: int = Field(256, ge=1)
    # server
    host: str = "127.0.0.1"
    port: int = 8000
    torch_threads: int | None = Field(None, ge=1)
    blas_threads: int = Field(1, ge=0, description="threads of numpy's and scipy's BLAS (OpenBLAS) in the server "
                              "(clustering unknown faces, duplicates, calibration); 0: the library's default (one "
                              "per core); OPENBLAS_NUM_THREADS, when set, wins. OpenBLAS's idle threads spin on a "
                              "core after each call: beside the model's own threads they take CPU the model needs")
    # security
    api_keys: list[ApiKey] = Field(default_factory=list, description="JSON list of {name, sha256, scopes}")
    cors_origins: list[str] = Field(default_factory=list, description="CORS is off unless origins are listed; "
                                    "these origins may also send state-changing requests (app/core/browser.py)")
    allowed_hosts: list[str] = Field(default_factory=list, description="a keyless server answers only requests "
                                     "whose Host is a loopback name or address, or one of these names (e.g. a "
                                     "compose service name); a DNS-rebinding page uses its own name")
    rate_limit: str | None = Field(None, description="per API key (or client address), e.g. '20/second'")
    rate_limit_storage: str = Field("memory://", description="limits storage URI; memory:// counts per process, "
                                    "redis://host:6379 shares counts between workers and replicas")
    public_metrics: bool = Field(False, description="on a keyed server, let /metrics and /ready's details "
                                 "(gallery size, model version, threshold) be read without a key")
    public_docs: bool = Field(True, description="on a keyed server, let /docs and /openapi.json be read without "
                              "a key (they describe the API, no data)")
    log_json: bool = True
    allow_no_auth_in_container: bool = Field(False, description="docker/compose.yml publishes the port on the "
                                             "host's loopback only; inside a container the API may then run keyless")
    # feedback
    probe_retention_s: float = Field(3600.0, ge=0.0, le=30 * 86400, description="keep each /identify answer's "
                                     "face crops this long, so POST /feedback can point at them by probe_id "
                                     "(0: keep none; answers carry no probe_id)")
    probe_max_rows: int = Field(10_000, ge=0, description="probes kept in all; past it the oldest are evicted "
                                "(a probe is one face's crop, about 35 kB at 160 px: a 50-face image stores 50); checked every "
                                "1/32 of it stored, so it may be passed by 3 %")
    probe_max_rows_per_key: int = Field(2_000, ge=0, description="probes kept per API key (or per client address "
                                        "without keys); past it that key's oldest are evicted first")
    feedback_max_per_key: int = Field(10_000, ge=1, description="reports kept per API key (or in all without "
                                      "keys); more are refused (409) until some are deleted")
    # unknown faces kept and clustered (app/services/unknown.py, docs/unknown.md): off unless asked for
    remember_unknown: bool = Field(False, description="keep every face /identify answers `unknown` (crop, "
                                   "embedding, box, source hash, time) and cluster them into people to name; "
                                   "without it a request asks with remember_unknown=true (write scope)")
    unknown_retention_s: float = Field(0.0, ge=0.0, description="delete kept unknown faces this long after they "
                                       "were seen (0: keep them until deleted, e.g. a photo library)")
    unknown_max_faces: int = Field(50_000, ge=1, description="kept unknown faces in all; past it the oldest are "
                                   "dropped (about 35 kB each at 160 px; looked at every 1/32 of it, so up to 3 % over)")
    unknown_cluster_far: float = Field(1e-3, gt=0.0, lt=1.0, description="pair false-accept rate of the "
                                       "same-person threshold: a face joins a cluster when its mean cosine "
                                       "similarity with its faces reaches the checkpoint's impostor-tail score at "
                                       "this rate; two clusters of a and b faces at this rate / min(a, b) "
                                       "(benchmarks/results/clustering.json, docs/unknown.md)")
    unknown_refine_every_faces: int = Field(50, ge=1, description="re-cluster (average linkage over all kept faces) "
                                            "in the background once this many faces were kept since the last time")
    unknown_refine_interval_s: float = Field(30.0, gt=0.0, description="how often the background task looks for "
                                             "expired faces and a due re-clustering")
    # training jobs (POST /admin/train)
    train_memory_bytes: int | None = Field(None, ge=2**28, description="memory a training job may use; a batch "
                                           "size whose estimate (1.35 GiB + 24 MiB per image) exceeds it is "
                                           "refused (default: the machine's available memory at the request)")
    train_keep_candidates: int = Field(3, ge=0, le=1000, description="unpublished candidate checkpoints kept "
                                       "(newest first, ~94 MB each); older ones are deleted when a job ends")
    # events: webhooks and MQTT (app/services/events.py, docs/events.md)
    background_nice: int = Field(10, ge=0, le=19, description="how much lower the CPU priority of background "
                                 "work (event delivery, re-clustering unknown faces) is than the requests' "
                                 "(Linux nice steps; 0: the same): it uses the time requests leave")
    events_worker: bool = Field(True, description="deliver events from this process (several may: each "
                                "subscription is leased to one at a time)")
    events_worker_process: bool = Field(True, description="the worker in a process of its own (app/services/"
                                        "delivery.py), at FACEID_BACKGROUND_NICE: its Python work then never "
                                        "holds up a request; off: a thread of the server's process")
    webhook_allowed_hosts: list[str] = Field(default_factory=list, description="webhook destinations allowed "
                                             "although not public: host names, addresses or networks (CIDR), e.g. "
                                             "[\"127.0.0.1\", \"10.0.0.0/8\"]; loopback and private addresses "
                                             "are refused unless listed; link-local and cloud metadata always")
    webhook_timeout_s: float = Field(5.0, gt=0, le=60, description="wait this long for a receiver's answer")
    events_max_attempts: int = Field(10, ge=1, le=100, description="tries of one event before it is a dead letter")
    events_retry_base_s: float = Field(1.0, gt=0, description="first retry after about this long; doubled per "
                                       "failed try (with jitter) up to events_retry_max_s")
    events_retry_max_s: float = Field(600.0, gt=0)
    events_max_backlog: int = Field(10_000, ge=1, description="events a subscription may be behind; past it the "
                                    "oldest become dead letters")
    events_max_dead_letters: int = Field(1_000, ge=1, description="dead letters kept per subscription, oldest "
                                         "dropped first (counted in faceid_events_dropped_total)")
    events_poll_interval_s: float = Field(0.5, gt=0, description="how often the worker looks for events written "
                                          "by other processes")
    events_round_interval_s: float = Field(0.2, ge=0, le=10, description="the worker delivers at most this often: "
                                           "the events of several requests go in one round (less work beside "
                                           "the requests), each delayed up to this long")
    events_lease_s: float = Field(30.0, gt=0, description="a worker's hold on a subscription, renewed each time "
                                  "its cursor is written; a worker that died loses it after this long")
    mqtt_url: str | None = Field(None, description="mqtt://user:pass@host:1883: publish events there too "
                                 "(topics, retained state, Home Assistant discovery: docs/events.md)")
    mqtt_topic_prefix: str = Field("faceid", pattern=r"^[^#+/][^#+]*$")
    mqtt_discovery_prefix: str = Field("homeassistant", pattern=r"^[^#+/][^#+]*$")
    # hot swap
    collections_max_open: int = Field(1024, ge=1, description="collections a process keeps open at once (their "
                                      "search index, database connections); the least recently used is closed first")
    keep_old_versions: bool = Field(True, description="keep the previous model's vectors for instant rollback")

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> "Settings":
        for field in ("sha256", "name"):
            seen = [getattr(k, field) for k in self.api_keys]
            dupes = sorted({v for v in seen if seen.count(v) > 1})
            if dupes:  # the last entry would silently win, or two clients share a rate limit and log name
                raise ValueError(f"api_keys: duplicate {field} {dupes[:3]}")
        if self.max_decode_bytes_per_request > self.max_decode_bytes:
            raise ValueError("max_decode_bytes_per_request must not exceed max_decode_bytes")
        if self.detector_thresholds and not all(0 < t < 1 for t in self.detector_thresholds):
            raise ValueError("detector_thresholds must lie strictly between 0 and 1")
        return self

    @property
    def keyless_allowed_anywhere(self) -> bool:
        """The compose file's opt-in: keyless inside a container whose port is published on loopback only."""
        in_container = Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()
        return self.allow_no_auth_in_container and in_container

    def refuse_unsafe_start(self) -> None:
        """An open (keyless) gallery of biometric data may only listen on loopback. FACEID_HOST is checked
        here; the address each request actually arrived on is checked by LoopbackOnlyMiddleware, which
        also covers `uvicorn --host 0.0.0.0` and other ways of starting the app."""
        if not self.api_keys and not self.is_loopback and not self.keyless_allowed_anywhere:
            raise RuntimeError(f"refusing to serve on {self.host} without API keys: set FACEID_API_KEYS "
                               "(python -m app.core.security new-key --name NAME --scopes read,write,admin) "
                               "or bind to 127.0.0.1")

    @property
    def is_loopback(self) -> bool:
        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@lru_cache
def get_settings() -> Settings:
    return Settings()
