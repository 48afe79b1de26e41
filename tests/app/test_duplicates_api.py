"""A real gallery with duplicates, on a real server with real weights and faces (issue: 6 people enrolled in the UI,
then a folder enrolled with the CLI that holds 3 of them under folder names)."""
from __future__ import annotations

import hashlib

import httpx
import pytest

from harness import Server

pytestmark = [pytest.mark.faces, pytest.mark.slow]

PEOPLE = ["Angelina_Jolie", "George_Clooney", "Jack_Dorsey", "Jennifer_Aniston", "Katy_Perry", "Matt_Damon"]
AGAIN = ["Angelina_Jolie", "Jennifer_Aniston", "Katy_Perry"]


@pytest.fixture(scope="module")
def api(tmp_path_factory, faces):
    srv = Server(tmp_path_factory.mktemp("dups") / "gallery.db").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            yield c
    finally:
        srv.stop()


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def photos(faces, name):
    return sorted((faces / "photos" / name).glob("*.jpg"))


def enroll(api, label, paths, n=2):
    """Enroll the first `n` of `paths` that have one usable face (group photos are passed over); the answers."""
    done = []
    for p in paths:
        r = api.post("/enroll", data={"label": label}, files=[("files", (p.name, p.read_bytes()))])
        if r.status_code == 422 and r.json()["error"]["code"] in ("ambiguous_face", "face_not_usable"):
            continue
        assert r.status_code == 201, r.text
        done.append(r.json())
        if len(done) == n:
            return done
    raise AssertionError(f"fewer than {n} usable photos of {label}")


def thresholds(api, faces) -> tuple[float, float, dict]:
    """(the typical search threshold, the 1:1 verification threshold, the selfie's answer)."""
    selfie = api.post("/identify", files={"file": ("s.jpg", (faces / "multi" / "selfie-many-people.jpg").read_bytes())})
    assert selfie.status_code == 200, selfie.text
    a, b = photos(faces, "Matt_Damon")[:2]
    v = api.post("/verify", files={"file": (a.name, a.read_bytes()), "file_b": (b.name, b.read_bytes())})
    assert v.status_code == 200, v.text
    return selfie.json()["threshold"], v.json()["threshold"], selfie.json()


def test_duplicates_leave_the_operating_point_alone_and_are_listed(api, faces):
    first, used = {}, {}
    for name in PEOPLE:  # the UI's labels: spaces
        bodies = enroll(api, name.replace("_", " "), photos(faces, name))
        assert all(b["warnings"] == [] for b in bodies)
        first[name] = bodies[0]["identity"]["id"]
        used[name] = {b["faces"][0]["source_sha256"] for b in bodies}
    search0, verify0, selfie0 = thresholds(api, faces)
    angelina0 = [f for f in selfie0["faces"] if f["status"] == "match"]
    assert [f["identity"]["label"] for f in angelina0] == ["Angelina Jolie"]

    second = {}
    for name in AGAIN:  # the CLI's folder names, other photos
        others = [p for p in photos(faces, name) if sha256(p) not in used[name]]
        bodies = enroll(api, name, others)
        second[name] = bodies[0]["identity"]["id"]
        warned = {w["identity"]["id"] for b in bodies for w in b["warnings"] if w["code"] == "possible_duplicate"}
        assert warned == {first[name]}, [b["warnings"] for b in bodies]
    search1, verify1, selfie1 = thresholds(api, faces)
    print(f"typical search threshold {search0} -> {search1}; verification {verify0} -> {verify1}")
    assert abs(search1 - search0) <= 0.01, (search0, search1)
    assert verify1 == verify0
    assert [f["identity"]["label"].replace("_", " ") for f in selfie1["faces"] if f["status"] == "match"] \
        == ["Angelina Jolie"]

    listed = api.get("/identities/duplicates").json()
    pairs = {frozenset((p["a"]["id"], p["b"]["id"])) for p in listed["items"]}
    assert pairs == {frozenset((first[n], second[n])) for n in AGAIN}
    assert listed["total"] == 3 and listed["threshold"] > verify0
    scores = [p["score"] for p in listed["items"]]
    assert scores == sorted(scores, reverse=True) and min(scores) >= listed["threshold"]

    # "not the same person" is remembered; a merge removes the pair; the rest stays listed
    r = api.post(f"/identities/{first['Katy_Perry']}/not-duplicate", json={"identity_id": second["Katy_Perry"]})
    assert r.status_code == 204, r.text
    r = api.post(f"/identities/{first['Angelina_Jolie']}/merge", json={"from_identity_id": second["Angelina_Jolie"]})
    assert r.status_code == 200, r.text
    left = api.get("/identities/duplicates").json()["items"]
    assert [frozenset((p["a"]["id"], p["b"]["id"])) for p in left] == \
        [frozenset((first["Jennifer_Aniston"], second["Jennifer_Aniston"]))]
    # and said again: undone, the pair comes back
    r = api.delete(f"/identities/{first['Katy_Perry']}/not-duplicate/{second['Katy_Perry']}")
    assert r.status_code == 204
    assert api.get("/identities/duplicates").json()["total"] == 2
