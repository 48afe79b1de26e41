"""Concurrent writes to one gallery row answer 204/200/404, never 500 (issue 19, item 2)."""
from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.faces]

ROUNDS = 8


def at_once(server, calls: list[tuple[str, str, dict]]) -> list[int]:
    """Send the calls from separate connections, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def one(call):
        method, url, kwargs = call
        with httpx.Client(base_url=server.url, timeout=120) as h:
            h.get("/health")  # connect first, so the barrier releases requests, not handshakes
            barrier.wait()
            return h.request(method, url, **kwargs).status_code

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


@pytest.fixture(scope="module")
def face_jpeg(faces) -> bytes:
    return sorted((faces / "photos" / "Matt_Damon").glob("*.jpg"))[0].read_bytes()


def test_concurrent_deletes_and_renames_never_500(server, client, face_jpeg):
    codes: Counter = Counter()
    for i in range(ROUNDS):
        r = client.post("/enroll", data={"label": f"race-{i}"}, files={"files": ("f.jpg", face_jpeg)})
        assert r.status_code == 201, r.text
        face_id, identity_id = r.json()["faces"][0]["id"], r.json()["identity"]["id"]
        got = at_once(server, [("DELETE", f"/faces/{face_id}", {})] * 3)
        assert sorted(got) == [204, 404, 404], got
        codes.update(got)

        r = client.post("/enroll", data={"label": f"race-b-{i}"}, files={"files": ("f.jpg", face_jpeg)})
        identity_id = r.json()["identity"]["id"]
        got = at_once(server, [("PATCH", f"/identities/{identity_id}", {"json": {"label": f"renamed-{i}"}}),
                               ("DELETE", f"/identities/{identity_id}", {}),
                               ("DELETE", f"/identities/{identity_id}", {})])
        assert got[0] in (200, 404) and sorted(got[1:]) == [204, 404], got
        codes.update(got)
    assert 500 not in codes
    assert client.get(f"/identities/{identity_id}").status_code == 404
