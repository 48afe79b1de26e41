"""An upgrade: a gallery made by the previous release (the code before collections, from this repository's history)
becomes the collection `default` with nothing changed: every identity, face, crop and vector is there, and the old
routes answer as before. On SQLite and on PostgreSQL + pgvector."""
from __future__ import annotations

import io
import subprocess
import tarfile

import httpx
import pytest

from harness import REPO, running

pytestmark = [pytest.mark.faces, pytest.mark.slow]

PREVIOUS = "10f72a98ee789ab8f1dc90cb2729061447774e4e"  # main before collections (session 10's last commit)
PEOPLE = ["Angelina_Jolie", "Matt_Damon", "Katy_Perry"]


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """The previous release's source tree (`git archive`), or a skip where this clone lacks that commit."""
    out = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"commit {PREVIOUS[:10]} (the previous release) is not in this clone: "
                    f"{out.stderr.decode(errors='replace').strip()[:200]}")
    root = tmp_path_factory.mktemp("previous")
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root


def everything(c: httpx.Client, faces) -> dict:
    """What a client can read of the gallery: identities with their faces, each crop, the counts, an answer."""
    ids = c.get("/identities", params={"limit": 500}).json()["items"]
    detail = [c.get(f"/identities/{i['id']}").json() for i in ids]
    crops = {f["id"]: c.get(f"/faces/{f['id']}/crop").content for d in detail for f in d["faces"]}
    ready = c.get("/ready").json()
    selfie = (faces / "multi" / "selfie-many-people.jpg").read_bytes()
    answer = c.post("/identify", files={"file": ("s.jpg", selfie)}, params={"top_k": 3}).json()
    return {"identities": [(d["id"], d["label"], [f["id"] for f in d["faces"]]) for d in detail], "crops": crops,
            "counts": (ready["identities"], ready["faces"], ready["indexed_vectors"], ready["model_version"]),
            "answer": [(f["status"], f["identity"], [(m["identity_id"], round(m["score"], 4)) for m in f["matches"]])
                       for f in answer["faces"]]}


def test_the_previous_releases_gallery_is_the_default_collection(previous, gallery_db, faces):
    with running(gallery_db, checkout=previous) as old:
        with httpx.Client(base_url=old.url, timeout=120) as c:
            assert c.get("/collections").status_code == 404  # truly the release before collections
            for name in PEOPLE:
                enrolled = 0
                for p in sorted((faces / "photos" / name).glob("*.jpg")):
                    r = c.post("/enroll", data={"label": name}, files=[("files", (p.name, p.read_bytes()))])
                    enrolled += r.status_code == 201
                    if enrolled == 2:
                        break
                assert enrolled == 2, name
            before = everything(c, faces)
    assert len(before["identities"]) == 3 and before["counts"][:3] == (3, 6, 6)
    with running(gallery_db) as new:
        with httpx.Client(base_url=new.url, timeout=120) as c:
            after = everything(c, faces)
            listed = c.get("/collections").json()
            via_default = c.get("/collections/default/identities", params={"limit": 500}).json()["items"]
    assert after == before
    assert [(x["name"], x["counts"]) for x in listed["collections"]] == [("default", {"identities": 3, "faces": 6})]
    assert [(i["id"], i["label"]) for i in via_default] == [(i, label) for i, label, _ in before["identities"]]
