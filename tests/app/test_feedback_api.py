"""Corrections against real servers (real weights, real faces) on SQLite and PostgreSQL: a probe id from one
process is reported on through another, and reports (and the probes they point at) survive a restart."""
from __future__ import annotations

import httpx
import pytest

from harness import running

pytestmark = [pytest.mark.faces, pytest.mark.slow]


def post_image(url: str, route: str, path, **data) -> httpx.Response:
    return httpx.post(f"{url}{route}", data=data, files={"file" if route != "/enroll" else "files":
                                                          (path.name, path.read_bytes())}, timeout=120)


def test_reports_cross_processes_and_survive_a_restart(gallery_db, faces):
    def photo(name: str, i: int):
        return sorted((faces / "photos" / name).glob("*.jpg"))[i]

    with running(gallery_db) as a, running(gallery_db) as b:
        ids = {}
        for name in ("Angelina_Jolie", "Matt_Damon"):
            r = post_image(a.url, "/enroll", photo(name, 0), label=name)
            assert r.status_code == 201, r.text
            ids[name] = r.json()["identity"]["id"]
        [face] = post_image(a.url, "/identify", photo("Angelina_Jolie", 1)).json()["faces"]
        assert face["status"] == "match" and face["identity"]["id"] == ids["Angelina_Jolie"]
        # reported on through the other process: the probe is in the database, not in a's memory
        r = httpx.post(f"{b.url}/feedback", json={"kind": "is_not", "identity_id": ids["Angelina_Jolie"],
                                                  "probe_id": face["probe_id"]}, timeout=60)
        assert r.status_code == 201, r.text
        first = r.json()
        assert first["answered_identity"]["id"] == ids["Angelina_Jolie"] and first["model_version"]
        r = post_image(b.url, "/feedback", photo("Jennifer_Aniston", 0), kind="nobody")
        assert r.status_code == 201, r.text
        error = httpx.post(f"{a.url}/feedback", json={"kind": "is", "identity_id": 10**6,
                                                      "probe_id": face["probe_id"]}, timeout=60)
        assert error.status_code == 404 and error.json()["error"]["code"] == "unknown_identity"
        listed = httpx.get(f"{a.url}/feedback").json()
        crop = httpx.get(f"{a.url}/feedback/{first['id']}/crop").content
    with running(gallery_db) as c:
        assert httpx.get(f"{c.url}/feedback").json() == listed and listed["total"] == 2
        assert httpx.get(f"{c.url}/feedback/{first['id']}/crop").content == crop
        r = httpx.post(f"{c.url}/feedback", json={"kind": "is", "identity_id": ids["Matt_Damon"],
                                                  "probe_id": face["probe_id"]}, timeout=60)
        assert r.status_code == 201, r.text  # the probe outlived the restart too (kept for an hour)
        # one report per probe and reporter: the later one replaced the first
        assert httpx.get(f"{c.url}/feedback/{first['id']}").status_code == 404
        assert httpx.get(f"{c.url}/feedback").json()["total"] == 2
        assert httpx.delete(f"{c.url}/feedback/{r.json()['id']}").status_code == 204
        assert httpx.get(f"{c.url}/feedback").json()["total"] == 1
