"""faceid_client/client.py's retry policy and error mapping, over httpx's MockTransport (the server's answers scripted)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from faceid_client.client import FaceIDClient, FaceIDError, retry_after_s

READY = {"status": "ready", "model_version": "v1", "model_name": "m", "device": "cpu", "precision": "fp32",
         "threshold": 0.5, "identities": 0, "faces": 0, "indexed_vectors": 0, "batching": True}
BUSY = {"error": {"code": "overloaded", "message": "the server is busy"}}


def scripted(*answers):
    """A client whose server answers `answers` in turn; returns (client, requests seen, sleeps taken)."""
    seen, sleeps, queue = [], [], list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = FaceIDClient("http://faceid.test", api_key="k1", retries=3, max_retry_wait_s=5,
                          transport=httpx.MockTransport(handler), sleep=sleeps.append)
    return client, seen, sleeps


def test_503_is_retried_after_what_retry_after_says_and_the_key_is_sent():
    client, seen, sleeps = scripted(httpx.Response(503, json=BUSY, headers={"Retry-After": "2"}),
                                    httpx.Response(200, json=READY))
    assert client.ready().model_version == "v1"
    assert sleeps == [2.0] and len(seen) == 2
    assert all(r.headers["x-api-key"] == "k1" for r in seen)


def test_retry_after_is_bounded_and_retries_run_out_into_the_apis_error():
    client, seen, sleeps = scripted(*[httpx.Response(503, json=BUSY, headers={"Retry-After": "3600"})] * 4)
    with pytest.raises(FaceIDError) as info:
        client.ready()
    assert (info.value.status, info.value.code, info.value.message) == (503, "overloaded", "the server is busy")
    assert sleeps == [5, 5, 5] and len(seen) == 4


def test_429_without_retry_after_backs_off_exponentially():
    client, _, sleeps = scripted(httpx.Response(429, json={"error": {"code": "rate_limited", "message": "x"}}),
                                 httpx.Response(429, json={"error": {"code": "rate_limited", "message": "x"}}),
                                 httpx.Response(200, json=READY))
    client.ready()
    assert sleeps == [0.5, 1.0]


def test_4xx_is_not_retried_and_carries_code_message_and_detail():
    body = {"error": {"code": "ambiguous_face", "message": "image 0 has 2 usable faces", "detail": {"faces": []}}}
    client, seen, sleeps = scripted(httpx.Response(422, json=body))
    with pytest.raises(FaceIDError) as info:
        client.enroll("a", [b"img"])
    e = info.value
    assert (e.status, e.code, e.detail) == (422, "ambiguous_face", {"faces": []}) and "2 usable" in str(e)
    assert len(seen) == 1 and sleeps == []
    assert b'name="label"' in seen[0].content and seen[0].url.path == "/enroll"


def test_a_non_json_error_still_raises_with_the_status():
    client, _, _ = scripted(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(FaceIDError) as info:
        client.ready()
    assert info.value.status == 502 and info.value.code == "http_error" and "bad gateway" in info.value.message


def test_connection_refused_is_retried_then_reported_as_unreachable():
    err = httpx.ConnectError("refused")
    client, seen, sleeps = scripted(err, err, err, err)
    with pytest.raises(FaceIDError) as info:
        client.ready()
    assert info.value.status == 0 and info.value.code == "unreachable" and len(seen) == 4 and len(sleeps) == 3


def test_retry_after_as_http_date():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_s(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7
    assert retry_after_s(format_datetime(now - timedelta(seconds=7), usegmt=True), now) == 0
    assert retry_after_s("12", now) == 12 and retry_after_s("soon", now) is None and retry_after_s(None) is None


def test_identities_pages_through_everything():
    pages = [{"items": [{"id": i, "label": f"p{i}", "face_count": 1, "created_at": "2026-01-01T00:00:00Z",
                         "updated_at": "2026-01-01T00:00:00Z"} for i in ids], "total": 3, "offset": 0, "limit": 2}
             for ids in ([1, 2], [3])]
    client, seen, _ = scripted(*[httpx.Response(200, json=p) for p in pages])
    assert [i.label for i in client.identities(page_size=2)] == ["p1", "p2", "p3"]
    assert [r.url.params["offset"] for r in seen] == ["0", "2"]
