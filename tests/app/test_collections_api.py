"""Collections on a real server with real weights and faces, on SQLite and on PostgreSQL + pgvector: nothing of one
collection is readable or writable through another's routes, or with a key bound to another (every route of the
OpenAPI document is tried); a search in one never returns another's people, even while that one is being enrolled
into; per-collection operating points; a delete a crash interrupted is finished at the next start."""
from __future__ import annotations

import hashlib
import json
import threading

import httpx
import pytest

from app.core.security import hash_key
from harness import Server
from tests.conftest import BACKENDS, new_gallery

pytestmark = [pytest.mark.faces, pytest.mark.slow]

ADMIN, DOORS, DOORS_READ = "adm-" + "a" * 30, "drs-" + "b" * 30, "drr-" + "c" * 30
KEYS = [{"name": "admin", "sha256": hash_key(ADMIN), "scopes": ["admin"]},
        {"name": "doors-admin", "sha256": hash_key(DOORS), "scopes": ["admin"], "collections": ["doors"]},
        {"name": "doors-read", "sha256": hash_key(DOORS_READ), "scopes": ["read"], "collections": ["doors", "lobby"]}]
# people of collection `secret` (B): their labels must never appear in an answer about `doors` (A)
B_PEOPLE = ["Angelina_Jolie", "Jennifer_Aniston", "Katy_Perry"]
A_PERSON = "Matt_Damon"


def photos(faces, name):
    return sorted((faces / "photos" / name).glob("*.jpg"))


def enroll(c, prefix, label, paths, n=1, **extra):
    """Enroll the first `n` of `paths` with one usable face; the answers."""
    done = []
    for p in paths:
        r = c.post(f"{prefix}/enroll", data={"label": label, **extra}, files=[("files", (p.name, p.read_bytes()))])
        if r.status_code == 422 and r.json()["error"]["code"] in ("ambiguous_face", "face_not_usable", "face_quality"):
            continue
        assert r.status_code == 201, r.text
        done.append(r.json())
        if len(done) == n:
            return done
    raise AssertionError(f"fewer than {n} usable photos of {label}")


@pytest.fixture(scope="module", params=BACKENDS)
def world(request, tmp_path_factory, faces):
    """A server with collections `doors` (A: one person) and `secret` (B: three people, one of them twice under
    another label, probes, a kept unknown face, a report), and what B holds."""
    db = new_gallery(request.param, request, tmp_path_factory.mktemp("coll"))
    srv = Server(db, env={"FACEID_API_KEYS": json.dumps(KEYS), "FACEID_EVENTS_WORKER": "false"}).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120, headers={"X-API-Key": ADMIN}) as c:
            for name, fpir in (("doors", 0.001), ("secret", 0.05)):
                r = c.post("/collections", json={"name": name, "settings": {"target_fpir": fpir}})
                assert r.status_code == 201, r.text
            a = enroll(c, "/collections/doors", A_PERSON.replace("_", " "), photos(faces, A_PERSON))
            b = {}
            for name in B_PEOPLE:
                b[name] = enroll(c, "/collections/secret", "B " + name, photos(faces, name), n=2)
            again = enroll(c, "/collections/secret", "B again " + B_PEOPLE[0], photos(faces, B_PEOPLE[0])[::-1])
            group = (faces / "multi" / "selfie-many-people.jpg").read_bytes()
            r = c.post("/collections/secret/identify", files={"file": ("g.jpg", group)},
                       params={"remember_unknown": "true"})
            assert r.status_code == 200, r.text
            probe_ids = [f["probe_id"] for f in r.json()["faces"] if f.get("probe_id")]
            r = c.post("/collections/secret/feedback", json={"probe_id": probe_ids[0], "kind": "nobody"})
            assert r.status_code in (200, 201), r.text
            r = c.post("/collections/secret/unknown/refine")
            assert r.status_code in (200, 202), r.text
            clusters = c.get("/collections/secret/unknown").json()
            assert c.get("/collections/secret/identities/duplicates").json()["items"], "B has a suspected duplicate"
            held = {
                "identity_id": sorted({x["identity"]["id"] for v in b.values() for x in v} | {again[0]["identity"]["id"]}),
                "face_id": sorted(f["id"] for v in b.values() for x in v for f in x["faces"]),
                "probe_id": probe_ids,
                "feedback_id": [f["id"] for f in c.get("/collections/secret/feedback").json()["items"]],
                "cluster_id": [k["id"] for k in clusters["items"]],
                "unknown_face_id": [f for k in clusters["items"] for f in k["face_ids"]],
            }
            yield srv, c, held, a
    finally:
        srv.stop()


def b_state(c) -> str:
    """Everything B holds, as its own routes show it (a digest)."""
    parts = [c.get("/collections/secret/identities", params={"limit": 500}).text,
             c.get("/collections/secret/unknown").text, c.get("/collections/secret/feedback").text,
             c.get("/collections/secret/probes").text, c.get("/collections/secret/identities/duplicates").text]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def leaks(text: str) -> list[str]:
    return [n for n in B_PEOPLE if ("B " + n) in text]


def fill(path: str, held: dict, collection: str) -> str:
    """`path` with B's ids: its newest of each kind (A's own ids, from 1, are fewer: A holds no such one)."""
    url = path.replace("{collection}", collection)
    for param, ids in held.items():
        if "{" + param + "}" in url:
            url = url.replace("{" + param + "}", str(ids[-1] if ids else 99))
    return url.replace("{other_id}", str(held["identity_id"][-2]))


def test_nothing_of_b_is_readable_or_writable_through_a(world):
    srv, c, held, _ = world
    spec = c.get("/openapi.json").json()
    before = b_state(c)
    tried = 0
    for path, ops in spec["paths"].items():
        if not path.startswith("/collections/{collection}/"):
            continue
        url = fill(path, held, "doors")
        for method in ops:
            if method not in ("get", "post", "patch", "delete", "put"):
                continue
            body = {"label": "x", "identity_id": held["identity_id"][-1], "probe_id": held["probe_id"][-1],
                    "kind": "nobody", "face_ids": held["face_id"], "ids": held["face_id"]}
            r = c.request(method, url, json=body) if method != "get" else c.get(url)
            tried += 1
            assert r.status_code < 500, (method, url, r.text)
            assert not leaks(r.text), (method, url, r.text[:500])
            if "{" in path.removeprefix("/collections/{collection}") and method in ("get", "patch", "delete"):
                # a resource of B named by its id through A's routes: not found (A holds no such resource)
                assert r.status_code in (404, 422), (method, url, r.status_code, r.text[:300])
            if method == "get" and r.status_code == 200 and r.headers["content-type"].startswith("image/"):
                raise AssertionError(f"{url} returned a crop through A")
    assert tried >= 30, tried
    assert b_state(c) == before, "a request through A changed B"
    # and A's own lists show only A
    assert [i["label"] for i in c.get("/collections/doors/identities").json()["items"]] == ["Matt Damon"]
    assert c.get("/identities").json()["total"] == 0  # the default collection is a third, empty gallery


def test_a_key_bound_to_a_reaches_only_a(world):
    srv, c, held, _ = world
    spec = c.get("/openapi.json").json()
    with httpx.Client(base_url=srv.url, timeout=120, headers={"X-API-Key": DOORS}) as bound:
        refused = 0
        for path, ops in spec["paths"].items():
            if path in ("/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/metrics"):
                continue
            for method in ops:
                if (method, path) == ("get", "/collections"):
                    continue  # its own collections: below
                if path.startswith("/collections/{collection}/"):
                    url = fill(path, held, "secret")  # B's routes and B's ids
                elif path == "/collections/{collection}":
                    url = "/collections/secret"
                else:
                    url = fill(path, held, "default")  # the default collection's routes, and service-wide ones
                r = bound.request(method, url, content=b"{not json", headers={"content-type": "application/json"})
                assert r.status_code == 403, (method, url, r.status_code, r.text[:300])
                assert r.json()["error"]["code"] == "collection_forbidden", r.text
                refused += 1
        assert refused >= 60, refused
        r = bound.get("/collections/doors/identities")
        assert r.status_code == 200 and [i["label"] for i in r.json()["items"]] == ["Matt Damon"]
        assert bound.get("/collections/doors").status_code == 200  # its own collection's settings
        assert [x["name"] for x in bound.get("/collections").json()["collections"]] == ["doors"]
    with httpx.Client(base_url=srv.url, timeout=120, headers={"X-API-Key": DOORS_READ}) as reader:
        assert reader.get("/collections/doors/identities").status_code == 200
        assert reader.get("/collections/lobby/identities").status_code == 404  # bound to it, but none exists
        assert [x["name"] for x in reader.get("/collections").json()["collections"]] == ["doors"]
        assert reader.get("/collections/secret/identities").status_code == 403
        assert reader.delete("/collections/doors/identities/1").status_code == 403  # read scope only


def test_a_search_in_a_never_returns_b_even_while_b_is_enrolled(world, faces):
    srv, c, held, a = world
    probe = photos(faces, A_PERSON)[1].read_bytes()
    strangers = [p for n in B_PEOPLE for p in photos(faces, n)[2:5]]
    stop = threading.Event()
    errors: list = []

    def enroll_into_b():
        with httpx.Client(base_url=srv.url, timeout=120, headers={"X-API-Key": ADMIN}) as w:
            for i, p in enumerate(strangers):
                if stop.is_set():
                    return
                r = w.post("/collections/secret/enroll", data={"label": f"B {B_PEOPLE[i % 3]}"},
                           files=[("files", (p.name, p.read_bytes()))])
                if r.status_code >= 500:
                    errors.append(r.text)

    t = threading.Thread(target=enroll_into_b)
    t.start()
    seen = set()
    try:
        for p in strangers[:6] + [None] * 3:
            data = probe if p is None else p.read_bytes()
            r = c.post("/collections/doors/identify", files={"file": ("p.jpg", data)}, params={"top_k": 5})
            assert r.status_code == 200, r.text
            for f in r.json()["faces"]:
                seen |= {m["label"] for m in f["matches"]}
                if f["identity"]:
                    seen.add(f["identity"]["label"])
    finally:
        stop.set()
        t.join()
    assert seen <= {"Matt Damon"}, seen
    assert "Matt Damon" in seen
    assert not errors, errors


def test_each_collection_has_its_own_operating_point(world, faces):
    srv, c, held, _ = world
    group = (faces / "multi" / "selfie-many-people.jpg").read_bytes()
    op = {}
    for name in ("doors", "secret"):
        r = c.post(f"/collections/{name}/identify", files={"file": ("g.jpg", group)})
        op[name] = r.json()["operating_point"]
    assert op["doors"]["target_fpir"] == 0.001 and op["secret"]["target_fpir"] == 0.05
    r = c.patch("/collections/doors", json={"settings": {"target_fpir": 0.02}})
    assert r.status_code == 200 and r.json()["settings"]["target_fpir"] == 0.02
    r = c.post("/collections/doors/identify", files={"file": ("g.jpg", group)})
    assert r.json()["operating_point"]["target_fpir"] == 0.02
    r = c.patch("/collections/doors", json={"settings": {"target_fpir": None}})  # back to the service's
    assert "target_fpir" not in r.json()["settings"]
    assert c.post("/collections/doors/identify", files={"file": ("g.jpg", group)}).json()["operating_point"][
        "target_fpir"] == 0.01
    r = c.patch("/collections/doors", json={"settings": {"remember_unknown": True, "top_k": 1}})
    assert r.status_code == 200, r.text
    faces_ = c.post("/collections/doors/identify", files={"file": ("g.jpg", group)}).json()["faces"]
    assert any(f["cluster_id"] for f in faces_) and all(len(f["matches"]) <= 1 for f in faces_)  # its own settings
    assert c.get("/collections/doors/unknown", params={"min_faces": 1}).json()["total"] > 0
    assert c.get("/unknown", params={"min_faces": 1}).json()["total"] == 0  # the default keeps none (the service's setting)
    faces_ = c.post("/identify", files={"file": ("g.jpg", group)}).json()["faces"]
    assert not any(f["cluster_id"] for f in faces_)
    c.patch("/collections/doors", json={"settings": {"remember_unknown": None, "top_k": None}})
    assert c.patch("/collections/doors", json={"settings": {"target_fpir": 2}}).status_code == 422
    assert c.patch("/collections/doors", json={"settings": {"database_url": "x"}}).status_code == 422


def test_collection_names_and_the_default(world):
    srv, c, *_ = world
    for bad in ("Doors", "-x", "a" * 64, "a/b", "ü"):
        assert c.post("/collections", json={"name": bad}).status_code == 422, bad
    assert c.post("/collections", json={"name": "default"}).status_code == 409
    assert c.delete("/collections/default").status_code == 409
    assert c.get("/collections/nothere/identities").status_code == 404
    assert c.get("/collections/nothere/identities").json()["error"]["code"] == "unknown_collection"
    names = [x["name"] for x in c.get("/collections").json()["collections"]]
    assert names[0] == "default" and {"doors", "secret"} <= set(names)
    metrics = c.get("/metrics").text  # collections are counted, never a label (their number is unbounded)
    assert f'faceid_collections{{state="registered"}} {float(len(names) - 1)}' in metrics, metrics[-2000:]
    assert 'collection="' not in metrics


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_delete_a_crash_interrupted_is_finished_at_the_next_start(backend, request, tmp_path, faces):
    """The registry row is marked `deleting` first; a kill -9 after that leaves the data behind. The next start
    removes it, and the other collections are untouched."""
    from sqlalchemy import create_engine, text

    from harness import database_url

    db = new_gallery(backend, request, tmp_path)
    srv = Server(db).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for name in ("keep", "gone"):
                assert c.post("/collections", json={"name": name}).status_code == 201
                enroll(c, f"/collections/{name}", "Matt Damon", photos(faces, A_PERSON))
        srv.kill9()
        engine = create_engine(database_url(db))
        with engine.begin() as conn:  # as a kill -9 right after the delete's first step leaves it
            conn.execute(text("UPDATE collections SET state = 'deleting' WHERE name = 'gone'"))
            cid = conn.execute(text("SELECT id FROM collections WHERE name = 'gone'")).scalar()
        engine.dispose()
        leftover = (tmp_path / "g.db.collections" / f"c{cid}.db") if backend == "sqlite" else None
        if leftover is not None:
            assert leftover.exists()
        srv = Server(db).start()
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            assert c.get("/collections/gone/identities").status_code == 404
            assert [x["name"] for x in c.get("/collections").json()["collections"]] == ["default", "keep"]
            r = c.get("/collections/keep/identities").json()
            assert [i["label"] for i in r["items"]] == ["Matt Damon"]
            assert c.post("/collections", json={"name": "gone"}).status_code == 201  # the name is free again
            assert c.get("/collections/gone/identities").json()["total"] == 0  # and it starts empty
        if leftover is not None:
            assert not leftover.exists()
        else:
            engine = create_engine(database_url(db))
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM pg_namespace WHERE nspname = :n"),
                                    {"n": f"faceid_c{cid}"}).scalar() == 0
            engine.dispose()
    finally:
        srv.stop()


def test_a_hot_swap_re_embeds_every_collection(tmp_path, faces, gallery_db):
    """One model for all: a swap re-embeds the open collections and the closed ones (FACEID_COLLECTIONS_MAX_OPEN 1:
    one of the two is closed when the swap starts), and each then answers with the new model, finding its own."""
    import time

    from training.perturb import perturbed_checkpoint

    ckdir = tmp_path / "checkpoints"
    new_version = perturbed_checkpoint(ckdir / "second.pt")
    env = {"FACEID_CHECKPOINTS_DIR": str(ckdir), "FACEID_COLLECTIONS_MAX_OPEN": "1"}
    people = {"doors": "Matt_Damon", "lobby": "Katy_Perry"}
    srv = Server(gallery_db, env=env).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for name, person in people.items():
                assert c.post("/collections", json={"name": name}).status_code == 201
                enroll(c, f"/collections/{name}", person, photos(faces, person), n=2)
            old = c.get("/ready").json()["model_version"]
            assert c.post("/admin/model", json={"checkpoint": "second.pt"}).status_code == 202
            deadline = time.monotonic() + 300
            while (state := c.get("/admin/model").json())["swap"]["state"] not in ("done", "failed"):
                assert time.monotonic() < deadline, state
                time.sleep(0.2)
            assert state["swap"]["state"] == "done", state
            assert new_version != old
            for name, person in people.items():
                ready = c.get(f"/collections/{name}/ready").json()
                assert ready["model_version"] == new_version and ready["indexed_vectors"] == 2, ready
                r = c.post(f"/collections/{name}/identify",
                           files={"file": ("p.jpg", photos(faces, person)[-1].read_bytes())}).json()
                assert r["model_version"] == new_version
                assert [f["identity"]["label"] for f in r["faces"] if f["identity"]] == [person], r
    finally:
        srv.stop()


def test_deleting_a_collection_of_10000_faces_while_another_serves(tmp_path, faces, gallery_db):
    """The others' requests see no error while a large collection is deleted, and nothing of theirs is touched."""
    import numpy as np

    from app.gallery.store import GalleryStore
    from app.services.collections import collection_engine
    from harness import database_url
    from tests.app.test_transfer_routes import new_face

    srv = Server(gallery_db).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            assert c.post("/collections", json={"name": "big"}).status_code == 201
            assert c.post("/collections", json={"name": "other"}).status_code == 201
            enroll(c, "/collections/other", "Matt Damon", photos(faces, A_PERSON))
        from sqlalchemy import create_engine, text

        engine = create_engine(database_url(gallery_db))
        with engine.connect() as conn:
            cid = conn.execute(text("SELECT id FROM collections WHERE name = 'big'")).scalar()
        engine.dispose()
        store = GalleryStore(collection_engine(database_url(gallery_db), cid, 5.0))
        rng = np.random.default_rng(0)
        for i in range(100):  # 10,000 faces written straight into big's own database (as 10,000 enrollments would)
            store.enroll(f"person {i}", [new_face(rng, f"{i:064x}") for _ in range(100)])
        store.engine.dispose()
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            assert c.get("/collections/big").json()["counts"] == {"identities": 100, "faces": 10_000}
            probe = photos(faces, A_PERSON)[1].read_bytes()
            stop, answers = threading.Event(), []

            def serve_other():
                with httpx.Client(base_url=srv.url, timeout=120) as h:
                    while not stop.is_set() or len(answers) < 3:
                        r = h.post("/collections/other/identify", files={"file": ("p.jpg", probe)})
                        answers.append((r.status_code, [f["identity"] for f in r.json().get("faces", [])]))

            t = threading.Thread(target=serve_other)
            t.start()
            try:
                while not answers:  # the other collection is being served when the delete starts
                    t.join(0.01)
                r = c.delete("/collections/big")
            finally:
                stop.set()
                t.join()
            assert r.status_code == 200, r.text
            assert {a for a, _ in answers} == {200}, answers
            assert all(ids == [{"id": 1, "label": "Matt Damon"}] for _, ids in answers), answers
            assert c.get("/collections/big/identities").status_code == 404
            assert [x["name"] for x in c.get("/collections").json()["collections"]] == ["default", "other"]
            assert c.get("/collections/other").json()["counts"] == {"identities": 1, "faces": 1}
    finally:
        srv.stop()


def test_events_name_their_collection_and_arrive_once(tmp_path, faces):
    """A collection's enrollments (written in its own database's outbox, relayed to the service's) and its
    identifications reach the service's webhooks once each, signed, naming the collection."""
    import time

    from harness.receiver import Receiver

    with Receiver() as rx:
        env = {"FACEID_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]', "FACEID_EVENTS_POLL_INTERVAL_S": "0.2"}
        srv = Server(tmp_path / "g.db", env=env).start()
        try:
            with httpx.Client(base_url=srv.url, timeout=120) as c:
                hook = c.post("/webhooks", json={"url": rx.url("/hook"), "events": ["*"]}).json()
                rx.secrets["/hook"] = hook["secret"]
                assert c.post("/collections", json={"name": "doors"}).status_code == 201
                ident = enroll(c, "/collections/doors", "Matt Damon", photos(faces, A_PERSON))[0]["identity"]
                r = c.post("/collections/doors/identify",
                           files={"file": ("p.jpg", photos(faces, A_PERSON)[1].read_bytes())})
                assert r.json()["faces"][0]["status"] == "match"
                assert c.patch(f"/collections/doors/identities/{ident['id']}", json={"label": "Matt D"}).status_code == 200
                enroll(c, "", "Katy Perry", photos(faces, "Katy_Perry"))
                want = {("doors", "enroll"), ("doors", "identify.match"), ("doors", "identity.updated"),
                        ("default", "enroll")}
                deadline = time.monotonic() + 60
                while {(g["event"]["collection"], g["type"]) for g in rx.deliveries()} < want:
                    assert time.monotonic() < deadline, [(g["event"]["collection"], g["type"]) for g in rx.deliveries()]
                    time.sleep(0.05)
        finally:
            srv.stop()
    got = rx.deliveries()
    assert all(g["valid"] for g in got)
    assert len({g["id"] for g in got}) == len(got), "an event arrived twice"
    doors = [g["event"] for g in got if g["event"]["collection"] == "doors"]
    assert [e["type"] for e in doors] == ["enroll", "identify.match", "identity.updated"], doors  # in order
    assert doors[1]["data"]["identity"] == {"id": ident["id"], "label": "Matt Damon"}


def test_the_same_name_made_at_once_by_many_is_made_once(world):
    """Concurrent POST /collections of one name: one 201, the others 409 (never a 500)."""
    from concurrent.futures import ThreadPoolExecutor

    srv, *_ = world

    def make(_):
        with httpx.Client(base_url=srv.url, timeout=120, headers={"X-API-Key": ADMIN}) as h:
            return h.post("/collections", json={"name": "race"}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(make, range(8)))
    assert codes == [201] + [409] * 7, codes
