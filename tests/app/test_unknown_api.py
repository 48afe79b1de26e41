"""Unknown faces kept and clustered, on real faces with the real model (the app in process, lifespan run, a fresh
SQLite gallery per module fixture): name a cluster and the person is then recognised; dismiss; delete; a hot swap
re-embeds the kept faces; the cap and the retention; an `identify` key sees nothing of it."""
from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from app.core.security import ApiKey, hash_key
from tests.app.test_hot_swap import photos, wait_swap

pytestmark = [pytest.mark.slow, pytest.mark.faces]

KEYS = {"identify": "i-" + "d" * 30, "write": "w-" + "b" * 30, "admin": "x-" + "c" * 30}


def make_app(root, **overrides):
    from app.core.config import Settings
    from app.main import create_app

    settings = Settings(database_url=f"sqlite:///{root / 'gallery.db'}", checkpoints_dir=root / "checkpoints",
                        api_keys=[ApiKey(name=s, sha256=hash_key(k), scopes=[s]) for s, k in KEYS.items()],
                        unknown_refine_interval_s=3600, **overrides)
    return TestClient(create_app(settings), base_url="http://127.0.0.1", headers={"X-API-Key": KEYS["admin"]})


@pytest.fixture(scope="module")
def api(tmp_path_factory, faces):
    with make_app(tmp_path_factory.mktemp("unknown")) as c:
        yield c


@pytest.fixture(scope="module")
def swappable(tmp_path_factory, faces):
    from training.perturb import perturbed_checkpoint

    root = tmp_path_factory.mktemp("unknown-swap")
    version = perturbed_checkpoint(root / "checkpoints" / "second.pt")
    with make_app(root, unknown_max_faces=3, unknown_retention_s=3600) as c:
        c.new_version = version
        yield c


def keep(client, paths, person, seen: dict, **params) -> list[dict]:
    """Identify each photo with remember_unknown; `seen[unknown_face_id] = person` for its kept faces."""
    out = []
    for p in paths:
        r = client.post("/identify", params={"remember_unknown": "true", **params}, files={"file": (p.name, p.read_bytes())})
        assert r.status_code == 200, r.text
        for f in r.json()["faces"]:
            if f["unknown_face_id"] is not None:
                seen[f["unknown_face_id"]] = person
                out.append(f)
    return out


def clusters(client, **params) -> list[dict]:
    return client.get("/unknown", params={"min_faces": 1, "limit": 500, **params}).json()["items"]


def members(client, cluster_id) -> list[int]:
    return [f["id"] for f in client.get(f"/unknown/{cluster_id}").json()["faces"]]


def test_a_named_cluster_is_recognised_and_no_cluster_mixes_people(api, faces):
    assert api.delete("/unknown").status_code == 200
    seen: dict[int, str] = {}
    for name in ("Katy_Perry", "Matt_Damon"):
        assert len(keep(api, photos(faces, name, 4), name, seen)) >= 3
    r = api.post("/unknown/refine")
    assert r.status_code == 200 and r.json()["applied"] and r.json()["faces"] == len(seen)
    people_of = {c["id"]: {seen[f] for f in members(api, c["id"])} for c in clusters(api)}
    assert all(len(p) == 1 for p in people_of.values()), people_of  # never two people in one cluster
    katy = max((c for c in clusters(api) if people_of[c["id"]] == {"Katy_Perry"}), key=lambda c: c["size"])
    assert katy["size"] >= 2 and katy["suggestion"] is None

    r = api.post(f"/unknown/{katy['id']}/enroll", json={"label": "Katy (named from a cluster)"})
    assert r.status_code == 201, r.text
    assert r.json()["identity"]["face_count"] == katy["size"]
    assert api.get(f"/unknown/{katy['id']}").status_code == 404
    later = photos(faces, "Katy_Perry", 8)[-1]
    got = api.post("/identify", files={"file": (later.name, later.read_bytes())}).json()["faces"]
    assert [f["identity"]["label"] for f in got if f["status"] == "match"] == ["Katy (named from a cluster)"]
    assert api.delete(f"/identities/{r.json()['identity']['id']}").status_code == 204


def test_dismiss_and_delete(api, faces):
    assert api.delete("/unknown").status_code == 200
    seen: dict[int, str] = {}
    keep(api, photos(faces, "Jennifer_Aniston", 3), "Jennifer_Aniston", seen)
    keep(api, photos(faces, "Scarlett_Johansson", 3), "Scarlett_Johansson", seen)
    assert api.post("/unknown/refine").json()["applied"]
    by_person = {}
    for c in clusters(api):
        by_person.setdefault(seen[members(api, c["id"])[0]], c["id"])
    jen, scarlett = by_person["Jennifer_Aniston"], by_person["Scarlett_Johansson"]
    assert api.post(f"/unknown/{jen}/dismiss").json()["dismissed"]
    assert jen not in [c["id"] for c in clusters(api)] and jen in [c["id"] for c in clusters(api, dismissed="true")]
    assert api.post("/unknown/refine").json()["applied"]
    assert api.get(f"/unknown/{jen}").json()["dismissed"]  # a refine keeps the dismissed cluster
    gone = members(api, scarlett)
    assert api.delete(f"/unknown/{scarlett}").status_code == 204
    assert api.get(f"/unknown/{scarlett}").status_code == 404
    assert all(api.get(f"/unknown/faces/{f}/crop").status_code == 404 for f in gone)


def test_an_identify_key_sees_nothing(api, faces):
    ident = {"X-API-Key": KEYS["identify"]}
    p = photos(faces, "George_Clooney", 1)[0]
    r = api.post("/identify", params={"remember_unknown": "true"}, files={"file": (p.name, p.read_bytes())},
                 headers=ident)
    assert r.status_code == 403
    f = keep(api, [p], "George_Clooney", {})[0]
    for url in ("/unknown", f"/unknown/{f['cluster_id']}", f"/unknown/faces/{f['unknown_face_id']}/crop"):
        assert api.get(url, headers=ident).status_code == 403, url
    r = api.post("/identify", files={"file": (p.name, p.read_bytes())}, headers=ident)
    assert r.status_code == 200 and all(x["cluster_id"] is None for x in r.json()["faces"])


def test_a_hot_swap_re_embeds_the_kept_faces(swappable, faces):
    c = swappable
    assert c.delete("/unknown").status_code == 200
    kept = keep(c, photos(faces, "Jack_Dorsey", 2), "Jack_Dorsey", {})
    store = c.app.state.service.unknown.store
    old = c.get("/ready").json()["model_version"]
    assert store.versions() == {old: len(kept)}
    r = c.post("/admin/model", json={"checkpoint": "second.pt"})
    assert r.status_code == 202, r.text
    assert wait_swap(c)["swap"]["state"] == "done"
    assert store.versions()[c.new_version] == len(kept)
    refined = c.post("/unknown/refine").json()
    assert refined["applied"] and refined["faces"] == len(kept)  # clustered on the new model's embeddings


def test_the_cap_and_the_retention(swappable, faces):
    from app.gallery.models import utcnow

    c = swappable
    assert c.delete("/unknown").status_code == 200
    kept = keep(c, photos(faces, "Mark_Zuckerberg", 5), "Mark_Zuckerberg", {})
    assert len(kept) >= 4
    ids = sorted(f["unknown_face_id"] for f in kept)
    listed = sorted(f for cl in clusters(c) for f in members(c, cl["id"]))
    assert listed == ids[-3:]  # FACEID_UNKNOWN_MAX_FACES=3: the oldest dropped
    store = c.app.state.service.unknown.store
    assert store.prune_expired(now=utcnow() + timedelta(seconds=3500)) == 0
    assert store.prune_expired(now=utcnow() + timedelta(seconds=3700)) == 3  # FACEID_UNKNOWN_RETENTION_S=3600
    assert clusters(c) == [] and store.counts() == {"faces": 0, "clusters": 0}
