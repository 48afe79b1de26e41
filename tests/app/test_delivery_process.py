"""The event delivery worker in a process of its own (app/services/delivery.py), on a real server: it delivers at
a lower CPU priority, its counters reach the server's /metrics, a worker that dies is replaced, and a server
killed with -9 leaves no worker behind."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from harness import Server
from harness.receiver import Receiver

pytestmark = [pytest.mark.slow, pytest.mark.faces]


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(cond, timeout_s: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout_s
    while not (got := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return got


def delivered_ok(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith('faceid_event_deliveries_total{kind="webhook",result="ok"}'))


def worker_of(srv: Server) -> int:
    return wait_for(lambda: workers(srv), what="the delivery worker")[0]


@pytest.fixture
def image(faces) -> bytes:
    return next(iter(sorted((faces / "lfw").glob("*/*_0001.jpg")))).read_bytes()


def test_the_worker_delivers_from_its_own_lower_priority_process_and_is_replaced_when_it_dies(tmp_path, image):
    if nice_of(os.getpid()) + 1 > 19:
        pytest.skip("this process runs at nice 19 already: no lower priority to see")
    with Receiver() as rx:
        srv = Server(tmp_path / "g.db", env={"FACEID_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
                                             "FACEID_BACKGROUND_NICE": "7"}).start()
        try:
            r = httpx.post(f"{srv.url}/webhooks", json={"url": rx.url("/a")})
            assert r.status_code == 201, r.text
            rx.secrets["/a"] = r.json()["secret"]
            worker = worker_of(srv)
            assert nice_of(worker) == min(19, nice_of(srv.proc.pid) + 7)
            assert nice_of(srv.proc.pid) == nice_of(os.getpid())  # the server itself keeps its priority
            assert httpx.post(f"{srv.url}/enroll", data={"label": "a"}, files={"files": ("a.jpg", image)},
                              timeout=120).status_code == 201
            wait_for(lambda: rx.deliveries("/a"), what="the enroll event")
            assert all(d["valid"] for d in rx.deliveries("/a"))
            wait_for(lambda: delivered_ok(srv.url) >= 1, what="the worker's count in the server's /metrics")

            os.kill(worker, signal.SIGKILL)  # a worker that dies is started again, and delivers what came since
            wait_for(lambda: not alive(worker), what="the killed worker to go")
            assert httpx.post(f"{srv.url}/identify", files={"file": ("a.jpg", image)}, timeout=120).status_code == 200
            got = wait_for(lambda: [d for d in rx.deliveries("/a") if d["type"] == "identify.match"],
                           what="the identify event from the new worker")
            assert got[0]["valid"]
            assert worker_of(srv) != worker
        finally:
            srv.stop()


def workers(srv: Server) -> list[int]:
    return [c for c in children(srv.proc.pid) if "app.services.delivery" in Path(f"/proc/{c}/cmdline").read_text()]


def test_no_worker_until_a_subscription_and_a_server_killed_with_9_leaves_none_behind(tmp_path):
    srv = Server(tmp_path / "g.db", env={"FACEID_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]'}).start()
    try:
        assert httpx.get(f"{srv.url}/ready").status_code == 200 and workers(srv) == []  # nothing to deliver to
        r = httpx.post(f"{srv.url}/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 201, r.text
        worker = worker_of(srv)  # the first subscription starts it
        os.kill(srv.proc.pid, signal.SIGKILL)  # the server alone, not its process group
        srv.proc.wait()
        wait_for(lambda: not alive(worker), timeout_s=30, what="the orphaned worker to leave")
    finally:
        srv.stop()
