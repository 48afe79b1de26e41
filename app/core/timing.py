"""Where a request's time goes: per-stage timers, sent back as the `Server-Timing` header and counted in the
`faceid_stage_seconds` histogram (one label, the stage: a fixed set of names).

The request middleware (`app.core.observability.RequestContext`) opens a timing for each request; code on
the request path wraps a step in `with stage("detect"): ...` (around an `await` too: the time includes the
wait for a queue or a thread). Steps may repeat (a request with two images): their times add up. Outside a
request (tests, the CLI's in-process use) `stage` costs one context-variable read.

    Server-Timing: read;dur=0.9, decode;dur=4.1, detect;dur=61.3, align;dur=1.2, embed;dur=20.4,
                   search;dur=0.4, probes;dur=1.9, events;dur=0.0, total;dur=91.6

`total` is from the request's arrival at the middleware to the response's first byte; what the named
stages leave of it (routing, key check, validation, JSON) is `other`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar

from prometheus_client import Histogram

STAGE_SECONDS = Histogram("faceid_stage_seconds", "time per request stage (Server-Timing)", ["stage"],
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))

_current: ContextVar[dict[str, float] | None] = ContextVar("faceid_stage_timings", default=None)


def begin() -> dict[str, float]:
    """A new timing for the request running in this context (the middleware's call)."""
    timings: dict[str, float] = {}
    _current.set(timings)
    return timings


@contextmanager
def stage(name: str):
    """Add the time of the enclosed step to the current request's `name` (nothing outside a request)."""
    timings = _current.get()
    if timings is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def header(timings: dict[str, float], total_s: float) -> bytes:
    """The `Server-Timing` value (milliseconds), stages in the order they ran, then `other` and `total`."""
    parts = [f"{name};dur={s * 1000:.1f}" for name, s in timings.items()]
    if timings:
        parts.append(f"other;dur={max(0.0, total_s - sum(timings.values())) * 1000:.1f}")
    parts.append(f"total;dur={total_s * 1000:.1f}")
    return ", ".join(parts).encode("latin-1")


def observe(timings: dict[str, float]) -> None:
    for name, s in timings.items():
        STAGE_SECONDS.labels(name).observe(s)
