"""docs/events.md's and the README's ten-line receiver, run as written (its secret and port replaced): it accepts a
delivery signed as the service signs it and refuses a forged, a stale or an unsigned one."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx
import pytest

from app.services.webhooks import sign
from harness import REPO, free_port

pytestmark = pytest.mark.slow


def receiver_code(doc: str) -> str:
    text = (REPO / doc).read_text()
    return re.search(r"A receiver in ten\s+lines.*?```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize("doc", ["docs/events.md", "README.md"])
def test_the_documented_receiver_is_ten_lines_and_checks_signatures(doc):
    code = receiver_code(doc)
    assert len(code.strip().splitlines()) <= 10
    port = free_port()
    code = code.replace('b"whsec_..."', 'b"whsec_doc"').replace("8080", str(port))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
        body = b'{"id":"e1","type":"enroll"}'

        def post(header: str | None) -> int:
            headers = {"FaceID-Event-Id": "e1"} | ({"FaceID-Signature": header} if header else {})
            return httpx.post(f"http://127.0.0.1:{port}/", content=body, headers=headers, timeout=5).status_code

        assert post(sign("whsec_doc", body)) == 204
        assert post(sign("whsec_other", body)) == 400
        assert post(sign("whsec_doc", body, t=int(time.time()) - 301)) == 400
        assert post(None) == 400
    finally:
        proc.terminate()
        proc.wait(10)
