"""POST /admin/train: fine-tuning from the gallery (`python -m training.main --from-gallery`) as a separate
process, one at a time per checkpoints folder; its progress file; cancelling it; swapping to what it publishes.

One at a time holds across workers: the job process inherits an exclusive `flock` on
`<checkpoints>/jobs/train.lock` and holds it until it exits (a crash releases it too). Every worker reads a
job's state from its folder (`job.json`, `progress.json`, `train.log`), so any of them answers GET and DELETE.
The worker that started the job waits for it and, when the gate published a checkpoint, hot-swaps to it (the
swap is recorded in the gallery, so the other workers and replicas follow).
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from app.core.errors import AppError

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
MB_PER_IMAGE = 24 * 2**20    # measured (issue 27, CPU, 160 px): 1.7 GB at batch 16, 4.35 GB at 128
BASE_BYTES = 1_350 * 2**20   # the process, the model, optimiser state and the crop cache at batch 0
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***` (scheme://user:***@host)."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def training_bytes(batch_size: int) -> int:
    """Estimated peak memory of a training job at `batch_size` images per step."""
    return BASE_BYTES + batch_size * MB_PER_IMAGE


def available_bytes() -> int | None:
    """MemAvailable of this machine (Linux), None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_batch_fits(batch_size: int, memory_bytes: int | None) -> None:
    """422 `batch_too_large` when a job at `batch_size` would need more than `memory_bytes` (default: what the
    machine has available now)."""
    limit = memory_bytes if memory_bytes is not None else available_bytes()
    need = training_bytes(batch_size)
    if limit is not None and need > limit:
        fits = max(0, (limit - BASE_BYTES) // MB_PER_IMAGE)
        raise AppError(422, "batch_too_large", f"batch_size {batch_size} needs about {need / 2**30:.1f} GiB; "
                       f"{limit / 2**30:.1f} GiB are available (FACEID_TRAIN_MEMORY_BYTES); at most about {fits} "
                       "fits", detail={"estimated_bytes": need, "available_bytes": limit, "max_batch_size": int(fits)})


def prune_candidates(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` candidate checkpoints (`*.pt`, ~94 MB each) in `folder`; their small
    `.report.json` files stay. Returns what was deleted."""
    found = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    gone = []
    for path in found[keep:]:
        try:
            path.unlink()
            gone.append(path)
        except OSError as exc:
            log.warning("could not delete the old candidate %s: %s", path.name, exc)
    return gone


def training_command(options: dict, progress: Path, settings) -> list[str]:
    """The CLI invocation of a job (options: the validated POST /admin/train body)."""
    # the database URL (a password, maybe) travels in the environment (FACEID_DATABASE_URL), never on the
    # command line, which every local user can read in `ps`
    cmd = [sys.executable, "-m", "training.main", "--from-gallery",
           "--progress", str(progress), "--logdir", str(progress.parent / "runs")]
    flags = {"epochs": "--epochs", "max_minutes": "--max-minutes", "max_steps": "--max-steps", "lr": "--lrin",
             "batch_size": "--bs", "k": "--k", "val_identities": "--val-identities", "lfw_pairs": "--lfw-pairs",
             "mining": "--mining", "train_from": "--train-from", "validate_every": "--validate-every",
             "margin": "--margin", "seed": "--seed", "start_from": "--weights", "collection": "--collection",
             "keep": "--keep", "patience": "--patience", "select_lfw_pairs": "--select-lfw-pairs",
             "schedule": "--schedule", "warmup": "--warmup", "l2sp": "--l2sp"}
    for key, flag in flags.items():
        if options.get(key) is not None:
            cmd += [flag, str(options[key])]
    if options.get("blend") is not None:
        cmd += ["--blend", *(str(a) for a in options["blend"])]
    return cmd


class TrainingJobs:
    def __init__(self, settings, command=training_command):
        self.settings = settings
        self.root = Path(settings.checkpoints_dir) / "jobs"
        self.command = command
        self.on_published = None  # async callable(checkpoint name) -> dict, set by the service (the hot swap)
        self.on_finished = None  # callable(job dict), set by the service (the train.finished event)
        self._proc: subprocess.Popen | None = None

    # --- the lock ------------------------------------------------------------------------------------
    @contextmanager
    def _lock_fd(self):
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "train.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            yield fd
        finally:
            os.close(fd)

    def running(self) -> bool:
        """Whether a job process holds the lock (whichever worker started it)."""
        with self._lock_fd() as fd:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False

    # --- start, state, cancel ------------------------------------------------------------------------
    def start(self, options: dict, loop: asyncio.AbstractEventLoop | None = None) -> dict:
        check_batch_fits(int(options.get("batch_size") or 32), self.settings.train_memory_bytes)
        with self._lock_fd() as fd:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AppError(409, "training_in_progress", "a training job is running; GET /admin/train shows "
                               "it, DELETE /admin/train cancels it") from None
            job_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
            folder = self.root / job_id
            folder.mkdir(parents=True, mode=0o700)
            progress = folder / "progress.json"
            cmd = self.command(options, progress, self.settings)
            env = {**os.environ, "FACEID_DATABASE_URL": self.settings.database_url,
                   "FACEID_CHECKPOINTS_DIR": str(self.settings.checkpoints_dir),
                   "FACEID_WEIGHTS": self.settings.weights, "FACEID_TARGET_FPIR": str(self.settings.target_fpir),
                   "PYTHONPATH": str(REPO)}
            with os.fdopen(os.open(folder / "train.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as logf:
                # the child inherits the locked descriptor: the lock lives exactly as long as the job
                proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                        start_new_session=True, pass_fds=(fd,))
            job = {"id": job_id, "pid": proc.pid, "options": options, "started_at": time.time(),
                   "command": [redact(str(a)) for a in cmd[1:]]}
            _write_json(folder / "job.json", job)
            _write_json(self.root / "latest.json", {"id": job_id})
        self._proc = proc
        threading.Thread(target=self._wait, args=(proc, folder, loop), daemon=True, name=f"train-{job_id}").start()
        return self.state()

    def close(self) -> None:
        """At shutdown: a job this process started does not outlive it (nobody would swap to its result)."""
        if self._proc is not None and self._proc.poll() is None:
            log.warning("shutting down: cancelling training job %s", self._proc.pid)
            try:
                self.cancel()
            except AppError:  # it ended meanwhile
                pass

    def _wait(self, proc: subprocess.Popen, folder: Path, loop) -> None:
        """Reap the job; when it published a checkpoint, ask this process's service to swap to it."""
        rc = proc.wait()
        prune_candidates(Path(self.settings.checkpoints_dir) / "candidates", self.settings.train_keep_candidates)
        job = _read_json(folder / "job.json") or {}
        job.update(returncode=rc, finished_at=time.time())
        result = (_read_json(folder / "progress.json") or {}).get("result") or {}
        if rc == 0 and result.get("published") and self.on_published is not None and loop is not None \
                and loop.is_running():
            name = Path(result["checkpoint"]).name
            try:
                job["swap"] = asyncio.run_coroutine_threadsafe(self.on_published(name), loop).result(timeout=600)
            except AppError as exc:
                job["swap"] = {"state": "refused", "error": {"code": exc.code, "message": exc.message}}
            except Exception as exc:  # noqa: BLE001 - recorded for GET /admin/train, never lost
                log.exception("swap to the published checkpoint %s failed", name)
                job["swap"] = {"state": "failed", "error": {"code": "swap_failed", "message": str(exc)[:500]}}
        _write_json(folder / "job.json", job)
        if self.on_finished is not None:
            try:
                self.on_finished(job)
            except Exception:  # noqa: BLE001 - the job's record is written; a lost event is logged
                log.exception("could not record the train.finished event")

    def latest(self) -> Path | None:
        latest = _read_json(self.root / "latest.json")
        return self.root / latest["id"] if latest else None

    def state(self) -> dict:
        folder = self.latest()
        if folder is None or not (folder / "job.json").is_file():
            raise AppError(404, "no_training_job", "no training job has run here; POST /admin/train starts one")
        job = _read_json(folder / "job.json") or {}
        progress = _read_json(folder / "progress.json") or {}
        running = self.running() and "returncode" not in job
        if running:
            state = "running"
        elif job.get("cancelled"):
            state = "cancelled"
        elif progress.get("phase") in ("published", "not published"):
            state = progress["phase"].replace(" ", "_")
        else:
            state = "failed"
        out = {"id": job.get("id"), "state": state, "options": job.get("options"),
               "started_at": job.get("started_at"), "finished_at": job.get("finished_at"),
               "returncode": job.get("returncode"), "swap": job.get("swap"),
               **{k: progress.get(k) for k in ("phase", "step", "total_steps", "loss", "eta_s", "elapsed_s",
                                               "validation", "base_figures", "recipe", "kept", "result")}}
        if state == "failed":
            out["log_tail"] = redact(_tail(folder / "train.log"))
        return out

    def cancel(self) -> dict:
        folder = self.latest()
        job = _read_json(folder / "job.json") if folder else None
        if not job or not self.running() or "returncode" in job:
            raise AppError(409, "no_training_running", "no training job is running")
        job["cancelled"] = time.time()
        _write_json(folder / "job.json", job)
        try:
            os.killpg(job["pid"], signal.SIGTERM)  # its own session: the job and anything it started
        except ProcessLookupError:
            pass
        return self.state()


def _write_json(path: Path, data: dict) -> None:
    """Atomically, readable by the service's user only (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(json.dumps(data))
    os.chmod(tmp, 0o600)  # an older file of the same name keeps its mode through O_CREAT
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""
