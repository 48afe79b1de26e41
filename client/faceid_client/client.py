"""A small typed client of the faceid REST API (httpx): API key, timeouts, bounded retries on 503/429.

    from faceid_client import FaceIDClient, FaceIDError
    with FaceIDClient("http://127.0.0.1:8000", api_key="...") as fid:
        result = fid.identify(Path("group.jpg").read_bytes())
        for face in result.faces:
            print(face.status, face.identity.label if face.identity else None, face.score)

`collection="doors"` addresses that collection (an isolated gallery): every gallery call goes to
`/collections/doors/...`; service-wide calls (`ready`) and the collection admin calls do not.

Every API error is raised as `FaceIDError` with the API's `status`, `code` and `message`; a server that
cannot be reached is a `FaceIDError` with status 0 and code `unreachable`. The client is thread-safe
(one httpx connection pool), so one instance serves a pool of worker threads.
"""
from __future__ import annotations

import base64
import email.utils
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from faceid_client.collection_names import DEFAULT_COLLECTION, check_collection_name
from faceid_client.models import (
    CollectionOut,
    DuplicatePairOut,
    EnrollResponse,
    FacesBySource,
    FaceWithLabel,
    IdentifyResponse,
    IdentityDetail,
    IdentityPublic,
    Ready,
    VerifyResponse,
)

Image = bytes | Path
DEFAULT_URL = "http://127.0.0.1:8000"
MAX_ANSWER_BYTES = 256 * 2**20


class FaceIDError(Exception):
    """An error answer of the API (`status`, `code`, `message`, `detail`), or status 0 when unreachable."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None):
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.status, self.code, self.message, self.detail = status, code, message, detail


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def _read(image: Image) -> bytes:
    return image.read_bytes() if isinstance(image, Path) else image


class FaceIDClient:
    """Typed methods over the public API. `retries` extra attempts on 503 (overloaded, database down) and 429
    (rate limited), waiting what `Retry-After` says (else exponential back-off), at most `max_retry_wait_s`
    per wait; connection failures are retried the same way (the request never reached the server).
    `collection`: the gallery its gallery calls address (None or "default": the routes without a prefix); a name
    that is not a collection name is a ValueError here, before it reaches a URL path."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout_s: float = 120.0,
                 retries: int = 3, max_retry_wait_s: float = 30.0, transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep, max_answer_bytes: int = MAX_ANSWER_BYTES,
                 collection: str | None = None):
        headers = {"X-API-Key": api_key} if api_key else {}
        self.url, self.has_key, self.max_answer_bytes = url.rstrip("/"), bool(api_key), max_answer_bytes
        self.collection_name = check_collection_name(DEFAULT_COLLECTION if collection is None else collection)
        self.prefix = "" if self.collection_name == DEFAULT_COLLECTION else f"/collections/{self.collection_name}"
        self.retries, self.max_retry_wait_s, self._sleep = retries, max_retry_wait_s, sleep
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s, transport=transport)

    def gallery_path(self, path: str) -> str:
        """`path` of a gallery route (`/identify`) in this client's collection (`/collections/doors/identify`)."""
        return self.prefix + path

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "FaceIDClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """One API call with the retry policy; a non-2xx answer raises FaceIDError."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self._send(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    raise FaceIDError(0, "unreachable", f"cannot reach {self.url} ({exc})") from exc
                self._sleep(min(2.0 ** attempt * 0.5, self.max_retry_wait_s))
                continue
            except httpx.TimeoutException as exc:
                raise FaceIDError(0, "timeout", f"{method} {path} got no answer in time ({exc})") from exc
            except httpx.HTTPError as exc:
                raise FaceIDError(0, "transport_error", f"{method} {path} failed ({exc})") from exc
            if resp.status_code in (429, 503) and not last:
                wait = retry_after_s(resp.headers.get("retry-after"))
                self._sleep(min(wait if wait is not None else 2.0 ** attempt * 0.5, self.max_retry_wait_s))
                continue
            if resp.is_success:
                return resp
            raise self._error(resp)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _send(self, method: str, path: str, **kwargs) -> httpx.Response:
        """The answer, read whole unless it is (or says it is) larger than `max_answer_bytes`: whatever answers at
        the URL could send gigabytes, and the API's largest answers are a few megabytes."""
        resp = self.http.send(self.http.build_request(method, path, **kwargs), stream=True)
        try:
            declared = resp.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_answer_bytes:
                raise self._too_large(method, path)
            body = bytearray()
            for chunk in resp.iter_bytes():  # decompressed: a small gzip bomb counts at its full size
                body += chunk
                if len(body) > self.max_answer_bytes:
                    raise self._too_large(method, path)
        finally:
            resp.close()
        resp._content = bytes(body)  # what httpx's own read() sets
        return resp

    def _too_large(self, method: str, path: str) -> FaceIDError:
        return FaceIDError(0, "answer_too_large", f"{method} {path}: the answer is larger than "
                                                  f"{self.max_answer_bytes} bytes; not read")

    @staticmethod
    def _error(resp: httpx.Response) -> FaceIDError:
        try:
            err = resp.json()["error"]
            return FaceIDError(resp.status_code, str(err["code"]), str(err["message"]), err.get("detail"))
        except (ValueError, KeyError, TypeError):
            text = resp.text.strip()[:200] or resp.reason_phrase
            return FaceIDError(resp.status_code, "http_error", f"HTTP {resp.status_code}: {text}")

    # --- service ------------------------------------------------------------------------------------
    def ready(self) -> Ready:
        """GET /ready (GET /collections/{name}/ready: that collection's). A keyed server tells only `{"status": "ready"}` to a request without a valid key: the
        details were asked for, so that is a 401 here."""
        body = self.request("GET", self.gallery_path("/ready")).json()
        if isinstance(body, dict) and body.get("status") == "ready" and "model_version" not in body:
            why = ("the API key given was not accepted, or is bound to collections (then name one: "
                   "--collection NAME)") if self.has_key else "no API key was given"
            raise FaceIDError(401, "unauthorized", f"the server is ready, but shows its details only with a valid "
                                                   f"API key: {why}")
        return Ready.model_validate(body)

    def enroll(self, label: str, images: Iterable[Image], face_index: int | None = None) -> EnrollResponse:
        files = [("files", (f"image{i}", _read(im), "application/octet-stream")) for i, im in enumerate(images)]
        data: dict[str, str] = {"label": label}
        if face_index is not None:
            data["face_index"] = str(face_index)
        resp = self.request("POST", self.gallery_path("/enroll"), data=data, files=files)
        return EnrollResponse.model_validate(resp.json())

    def identify(self, image: Image, top_k: int | None = None, threshold: float | None = None,
                 remember_unknown: bool | None = None) -> IdentifyResponse:
        """`remember_unknown`: the server keeps the faces it answers `unknown` and clusters them (write scope)."""
        params = {k: v for k, v in (("top_k", top_k), ("threshold", threshold)) if v is not None}
        if remember_unknown is not None:
            params["remember_unknown"] = "true" if remember_unknown else "false"
        resp = self.request("POST", self.gallery_path("/identify"), params=params,
                            files={"file": ("image", _read(image), "application/octet-stream")})
        return IdentifyResponse.model_validate(resp.json())

    def verify(self, image: Image, other: Image | None = None, identity_id: int | None = None,
               threshold: float | None = None) -> VerifyResponse:
        """Two images, or an image and an enrolled identity (exactly one of `other`, `identity_id`)."""
        if (other is None) == (identity_id is None):
            raise ValueError("give exactly one of other, identity_id")
        files = {"file": ("a", _read(image), "application/octet-stream")}
        data = {}
        if other is not None:
            files["file_b"] = ("b", _read(other), "application/octet-stream")
        else:
            data["identity_id"] = str(identity_id)
        params = {"threshold": threshold} if threshold is not None else {}
        resp = self.request("POST", self.gallery_path("/verify"), params=params, data=data, files=files)
        return VerifyResponse.model_validate(resp.json())

    # --- unknown people (kept unknown faces, clustered) -------------------------------------------------
    def unknown_people(self, limit: int = 10, offset: int = 0, min_faces: int = 2) -> dict:
        """GET /unknown: {"items": clusters largest first, "total", ...} (JSON as the server sends it)."""
        return self.request("GET", self.gallery_path("/unknown"),
                            params={"limit": limit, "offset": offset, "min_faces": min_faces}).json()

    def refine_unknown(self) -> dict:
        """POST /unknown/refine: re-cluster every kept unknown face now."""
        return self.request("POST", self.gallery_path("/unknown/refine")).json()

    # --- gallery ------------------------------------------------------------------------------------
    def identities(self, prefix: str | None = None, page_size: int = 500) -> Iterator[IdentityPublic]:
        """Every identity (all pages), in id order."""
        offset = 0
        while True:
            params: dict[str, Any] = {"offset": offset, "limit": page_size}
            if prefix:
                params["prefix"] = prefix
            page = self.request("GET", self.gallery_path("/identities"), params=params).json()
            for item in page["items"]:
                yield IdentityPublic.model_validate(item)
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    def duplicates(self, page_size: int = 500) -> Iterator[DuplicatePairOut]:
        """Every suspected duplicate pair (all pages), strongest first."""
        offset = 0
        while True:
            page = self.request("GET", self.gallery_path("/identities/duplicates"),
                                params={"offset": offset, "limit": page_size}).json()
            for item in page["items"]:
                yield DuplicatePairOut.model_validate(item)
            offset += page_size  # a page can come back short (an identity deleted meanwhile): go by the total
            if offset >= page["total"]:
                return

    def merge(self, into_id: int, from_id: int) -> IdentityPublic:
        """Move every face of `from_id` into `into_id`; `from_id` is deleted."""
        return IdentityPublic.model_validate(self.request(
            "POST", self.gallery_path(f"/identities/{into_id}/merge"), json={"from_identity_id": from_id}).json())

    def not_duplicate(self, a: int, b: int) -> None:
        """Say that identities `a` and `b` are different people (no longer suggested as duplicates)."""
        self.request("POST", self.gallery_path(f"/identities/{a}/not-duplicate"), json={"identity_id": b})

    def identity(self, identity_id: int) -> IdentityDetail:
        resp = self.request("GET", self.gallery_path(f"/identities/{identity_id}"))
        return IdentityDetail.model_validate(resp.json())

    def find_identity(self, label: str) -> IdentityPublic | None:
        """The identity with exactly this label, if any."""
        return next((i for i in self.identities(prefix=label) if i.label == label), None)

    def face_crop(self, face_id: int) -> bytes:
        return self.request("GET", self.gallery_path(f"/faces/{face_id}/crop")).content

    def faces_by_source(self, hashes: Iterable[str], chunk: int = 100) -> list[FaceWithLabel]:
        """Stored faces whose source image SHA-256 is among `hashes` (asked `chunk` at a time)."""
        hashes = sorted(set(hashes))
        out: list[FaceWithLabel] = []
        for i in range(0, len(hashes), chunk):
            resp = self.request("GET", self.gallery_path("/faces"), params={"source_sha256": hashes[i:i + chunk]})
            out.extend(FacesBySource.model_validate(resp.json()).items)
        return out

    def import_faces(self, label: str, faces: list[dict]) -> EnrollResponse:
        """Add stored aligned crops to `label`. Each face: crop (PNG bytes), source_sha256, box, landmarks,
        detection_score, crop_margin."""
        body = {"label": label, "faces": [{**f, "crop": base64.b64encode(f["crop"]).decode()} for f in faces]}
        return EnrollResponse.model_validate(self.request("POST", self.gallery_path("/faces/import"), json=body).json())

    # --- collections (admin scope; service-wide routes, whatever this client's collection) ------------------
    def collections(self) -> list[CollectionOut]:
        """GET /collections: every collection, `default` included."""
        body = self.request("GET", "/collections").json()
        return [CollectionOut.model_validate(c) for c in body["collections"]]

    def collection(self, name: str) -> CollectionOut:
        """GET /collections/{name}: its settings and counts (404 `unknown_collection`)."""
        resp = self.request("GET", f"/collections/{check_collection_name(name)}")
        return CollectionOut.model_validate(resp.json())

    def create_collection(self, name: str, **settings: Any) -> CollectionOut:
        """POST /collections; `settings`: target_fpir, match_threshold, remember_unknown, unknown_retention_s,
        probe_retention_s (None: the service's setting). 409 `collection_exists` when it does."""
        resp = self.request("POST", "/collections", json={"name": check_collection_name(name), "settings": settings})
        return CollectionOut.model_validate(resp.json())

    def update_collection(self, name: str, **settings: Any) -> CollectionOut:
        """PATCH /collections/{name}: only the settings given change (None: back to the service's setting)."""
        resp = self.request("PATCH", f"/collections/{check_collection_name(name)}", json={"settings": settings})
        return CollectionOut.model_validate(resp.json())

    def delete_collection(self, name: str) -> None:
        """DELETE /collections/{name}: its identities, faces and kept unknown faces go with it (`default`: 409)."""
        self.request("DELETE", f"/collections/{check_collection_name(name)}")
