"""Restarts on the same database give identical results, and two processes share one gallery."""
from __future__ import annotations

import httpx
import pytest

from harness import running

pytestmark = [pytest.mark.faces, pytest.mark.slow]


def identify(url: str, path) -> list:
    r = httpx.post(f"{url}/identify", files={"file": (path.name, path.read_bytes())}, timeout=120)
    r.raise_for_status()
    return [(f["status"], f["identity"], [(m["identity_id"], round(m["score"], 5)) for m in f["matches"]])
            for f in r.json()["faces"]]


def test_restart_gives_identical_results_and_replicas_share_the_gallery(gallery_db, faces):
    db = gallery_db
    people = ["Angelina_Jolie", "Matt_Damon", "Jennifer_Aniston"]
    probe = faces / "multi" / "selfie-many-people.jpg"
    with running(db) as a:
        for name in people:
            img = sorted((faces / "photos" / name).glob("*.jpg"))[0]
            r = httpx.post(f"{a.url}/enroll", data={"label": name}, files={"files": (img.name, img.read_bytes())},
                           timeout=120)
            assert r.status_code == 201, r.text
        with running(db) as b:  # a second process (replica / worker) on the same gallery
            late = sorted((faces / "photos" / "George_Clooney").glob("*.jpg"))[0]
            r = httpx.post(f"{b.url}/enroll", data={"label": "George_Clooney"},
                           files={"files": (late.name, late.read_bytes())}, timeout=120)
            assert r.status_code == 201
            probe_gc = sorted((faces / "photos" / "George_Clooney").glob("*.jpg"))[1]
            seen_by_a = identify(a.url, probe_gc)
            assert any(s == "match" and i["label"] == "George_Clooney" for s, i, _ in seen_by_a), seen_by_a
            assert httpx.get(f"{a.url}/ready").json()["faces"] == 4
            before = identify(a.url, probe)
            assert identify(b.url, probe) == before
    with running(db) as c:
        after = identify(c.url, probe)
    assert after == before
    assert any(s == "match" and i["label"] == "Angelina_Jolie" for s, i, _ in after)
