"""API keys and scopes on every route; no keyless server off loopback; input limits under a memory cap."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.core.security import hash_key
from harness import REPO, Server, running, zero_png

pytestmark = pytest.mark.slow

KEYS = {"identify": "i-" + "d" * 30, "read": "r-" + "a" * 30, "write": "w-" + "b" * 30, "admin": "x-" + "c" * 30}
OPEN = {"/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
LOWER = {"identify": None, "read": "identify", "write": "read", "admin": "write"}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    entries = [{"name": f"{s}-key", "sha256": hash_key(k), "scopes": [s]} for s, k in KEYS.items()]
    srv = Server(tmp_path_factory.mktemp("auth") / "g.db", env={"FACEID_API_KEYS": json.dumps(entries)})
    srv.start()
    yield srv
    srv.stop()


def needed_scope(method: str, path: str) -> str:
    if path.startswith("/collections/{collection}/"):  # another collection's gallery: the same scopes
        path = path.removeprefix("/collections/{collection}")
    if path.startswith(("/admin", "/webhooks", "/collections")) or path == "/calibration":
        return "admin"
    if method == "post" and path in ("/enroll", "/identities/{identity_id}/merge", "/faces/import", "/feedback",
                                     "/faces/{face_id}/move", "/identities/{identity_id}/not-duplicate",
                                     "/unknown/refine", "/unknown/{cluster_id}/enroll", "/unknown/{cluster_id}/dismiss") \
            or method in ("patch", "delete"):
        return "write"
    if path in ("/identify", "/verify", "/metrics", "/ready"):  # (/ready: a collection's, /collections/{c}/ready)
        return "identify"
    return "read"


def test_every_route_checks_key_and_scope(keyed):
    spec = httpx.get(f"{keyed.url}/openapi.json").json()
    checked = 0
    with httpx.Client(base_url=keyed.url, timeout=60) as c:
        for path, ops in spec["paths"].items():
            if path in OPEN:
                continue
            url = path.replace("{identity_id}", "1").replace("{face_id}", "1").replace("{feedback_id}", "1") \
                .replace("{other_id}", "2").replace("{webhook_id}", "1") \
                .replace("{cluster_id}", "1")
            for method in ops:
                scope = needed_scope(method, path)
                for headers, want in (({}, 401), ({"X-API-Key": "wrong"}, 401)):
                    r = c.request(method, url, headers=headers)
                    assert r.status_code == want, (method, path, headers, r.text)
                    assert r.json()["error"]["code"] == "unauthorized"
                lower = LOWER[scope]
                if lower:
                    r = c.request(method, url, headers={"X-API-Key": KEYS[lower]})
                    assert r.status_code == 403, (method, path, r.text)
                    assert r.json()["error"]["code"] == "forbidden"
                r = c.request(method, url, headers={"X-API-Key": KEYS[scope]})
                assert r.status_code not in (401, 403), (method, path, r.text)
                checked += 1
    assert checked >= 12
    assert httpx.get(f"{keyed.url}/health").status_code == 200


def test_keys_are_checked_before_bodies_and_details_need_a_key(keyed):
    with httpx.Client(base_url=keyed.url, timeout=60) as c:
        for method, url in (("PATCH", "/identities/1"), ("POST", "/admin/model"), ("POST", "/enroll")):
            r = c.request(method, url, content=b"{not json", headers={"content-type": "application/json"})
            assert r.status_code == 401, (url, r.text)  # not 422 about a body the client may not send
        r = c.request("PATCH", "/identities/1", content=iter([b"{" + b" " * (1 << 20)] * 20),
                      headers={"content-type": "application/json", "X-API-Key": KEYS["write"]})
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text  # chunked
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"X-API-Key": KEYS["identify"]}).status_code == 200
        assert c.get("/ready").json() == {"status": "ready"}
        assert "model_version" in c.get("/ready", headers={"X-API-Key": KEYS["identify"]}).json()
        for url in ("/identities", "/faces/1", "/faces/1/crop", "/unknown", "/unknown/1",
                    "/unknown/faces/1/crop"):  # an identify key sees no gallery biometrics, nor kept unknown faces
            assert c.get(url, headers={"X-API-Key": KEYS["identify"]}).status_code == 403, url
        assert c.post("/embed", headers={"X-API-Key": KEYS["identify"]}).status_code == 403


def test_key_settings_are_checked_at_start_up():
    from pydantic import ValidationError

    from app.core.config import Settings

    entry = {"name": "a", "sha256": hash_key("k"), "scopes": ["read"]}
    with pytest.raises(ValidationError, match="unknown scope"):
        Settings(api_keys=[{**entry, "scopes": ["wirte"]}])
    with pytest.raises(ValidationError, match="duplicate sha256"):
        Settings(api_keys=[entry, {**entry, "name": "b"}])
    with pytest.raises(ValidationError, match="duplicate name"):
        Settings(api_keys=[entry, {**entry, "sha256": hash_key("other")}])


def test_request_id_is_returned_and_logs_hold_no_keys(keyed):
    r = httpx.get(f"{keyed.url}/identities", params={"api_key": KEYS["admin"]})  # keys are never read from URLs
    assert r.status_code == 401
    r = httpx.get(f"{keyed.url}/identities", headers={"X-API-Key": KEYS["read"], "X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert httpx.get(f"{keyed.url}/health").headers["x-request-id"]
    deadline = time.monotonic() + 60  # the access log line is written after the response: poll for it
    while '"request_id": "abc-123"' not in keyed.log_tail(200_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    log = keyed.log_tail(200_000)
    assert '"request_id": "abc-123"' in log and '"api_key": "read-key"' in log
    assert all(k not in log for k in KEYS.values())


def test_no_keys_on_a_public_address_refuses_to_start(tmp_path):
    env = {"FACEID_DATABASE_URL": f"sqlite:///{tmp_path}/g.db", "FACEID_HOST": "0.0.0.0", "FACEID_API_KEYS": "[]"}
    proc = subprocess.run([sys.executable, "-c", "from app.main import create_app; create_app()"], cwd=REPO,
                          env={**__import__("os").environ, **env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "refusing to serve on 0.0.0.0 without API keys" in proc.stderr


def _png_bomb(width: int, height: int) -> bytes:
    """A valid grayscale PNG of width x height zero pixels, a few hundred kB."""
    return zero_png(width, height)


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM: cannot measure this process's peak memory")


def _peak_rss_mb(pid: int) -> float:
    """The process tree's peak resident memory in MB: the sum of each process's own peak (VmHWM) over `pid` and all
    its descendants (an upper bound of the tree's peak at any one moment). A process that cannot be read fails
    the measurement, except a descendant that exited between being listed and being read (nothing left of it)."""
    total_kb, todo = _vm_hwm_kb(pid), _children(pid)
    while todo:
        p = todo.pop()
        try:
            total_kb += _vm_hwm_kb(p)
            todo += _children(p)
        except FileNotFoundError:
            continue
    return total_kb / 1024


def test_bomb_and_huge_upload_are_refused_within_memory(tmp_path):
    with running(tmp_path / "g.db") as srv:
        bomb = _png_bomb(8000, 6250)  # 50 megapixels
        r = httpx.post(f"{srv.url}/embed", files={"file": ("bomb.png", bomb)}, timeout=60)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels"
        big = b"\0" * (200 * 1024 * 1024)
        r = httpx.post(f"{srv.url}/embed", content=big, headers={"content-type": "multipart/form-data; boundary=x"},
                       timeout=60)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"

        def chunks():  # a well-formed multipart start, then 200 MB; no Content-Length: refused while streaming
            yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
            for _ in range(200):
                yield b"\0" * (1024 * 1024)

        r = httpx.post(f"{srv.url}/embed", content=chunks(),
                       headers={"content-type": "multipart/form-data; boundary=x"}, timeout=60)
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
        assert httpx.get(f"{srv.url}/health").status_code == 200
        peak_mb = _peak_rss_mb(srv.proc.pid)
        assert 100 < peak_mb < 2048, peak_mb  # a server with its model loaded holds more than 100 MB


def test_rate_limit_per_key(tmp_path):
    entries = [{"name": "a", "sha256": hash_key(KEYS["read"]), "scopes": ["read"]},
               {"name": "b", "sha256": hash_key(KEYS["write"]), "scopes": ["write"]}]
    env = {"FACEID_API_KEYS": json.dumps(entries), "FACEID_RATE_LIMIT": "5/minute"}
    with running(tmp_path / "g.db", env=env) as srv:
        h = httpx.Client(base_url=srv.url, timeout=30)
        codes = [h.get("/identities", headers={"X-API-Key": KEYS["read"]}).status_code for _ in range(7)]
        assert codes == [200] * 5 + [429] * 2
        r = h.get("/identities", headers={"X-API-Key": KEYS["read"]})
        assert r.json()["error"]["code"] == "rate_limited" and r.headers["retry-after"]
        assert h.get("/identities", headers={"X-API-Key": KEYS["write"]}).status_code == 200  # another key
        # made-up keys count against the client's address, not each against its own fresh counter
        guesses = [h.get("/identities", headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(8)]
        assert guesses == [401] * 5 + [429] * 3, guesses


def test_rate_limit_on_an_open_server_ignores_made_up_keys(tmp_path):
    """Issue 19, item 4: on a keyless server each random X-API-Key used to get a fresh counter (all 200)."""
    with running(tmp_path / "g.db", env={"FACEID_RATE_LIMIT": "5/minute"}) as srv, \
            httpx.Client(base_url=srv.url, timeout=30) as h:
        codes = [h.get("/identities", headers={"X-API-Key": f"random-{i}"}).status_code for i in range(8)]
    assert codes == [200] * 5 + [429] * 3, codes


_IN_NETNS = r"""
import json, os, subprocess, sys, time
import httpx
port = 8000  # a private network namespace: nothing else listens here
proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
                         "--host", "0.0.0.0", "--port", str(port)], stdout=open(sys.argv[1], "wb"),
                        stderr=subprocess.STDOUT)
try:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    out = {}
    for host in ("127.0.0.1", "10.9.9.9"):
        r = httpx.get(f"http://{host}:{port}/identities", timeout=30)
        out[host] = [r.status_code, r.json().get("error", {}).get("code")]
    print(json.dumps(out))
finally:
    proc.terminate()
    proc.wait(30)
"""


def test_keyless_server_started_on_all_addresses_refuses_non_loopback_requests(tmp_path):
    """`uvicorn --host 0.0.0.0` bypasses FACEID_HOST; each request's local address is checked instead.
    Runs in a private network namespace (unshare -rn) where 10.9.9.9 is a non-loopback local address."""
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare -rn (user + network namespaces) is not available here")
    env = {**__import__("os").environ, "FACEID_DATABASE_URL": f"sqlite:///{tmp_path}/g.db", "FACEID_API_KEYS": "[]"}
    env.pop("FACEID_HOST", None)
    cmd = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && ip addr add 10.9.9.9/32 dev lo && exec "$@"', "sh",
           sys.executable, "-c", _IN_NETNS, str(tmp_path / "server.log")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["127.0.0.1"] == [200, None]
    assert out["10.9.9.9"] == [403, "keyless_non_loopback"]
