"""UnknownStore on both databases (migration 0010 on SQLite and PostgreSQL + pgvector): the online step, the refine
applied, enrolling a cluster in one gallery transaction, dismissed clusters kept by a refine, re-embedding."""
from __future__ import annotations

import numpy as np
import pytest

from app.gallery.feedback import FaceCrop
from app.gallery.store import GalleryStore, NotFound, make_engine, migrate
from app.gallery.unknown import UnknownStore
from harness import database_url
from model.clustering import average_linkage

pytestmark = pytest.mark.slow  # PostgreSQL


def crop(i: int) -> FaceCrop:
    from app.gallery.store import crop_to_png

    return FaceCrop(crop_to_png(np.full((8, 8, 3), i % 250, np.uint8)), 8, 0, f"{i:064x}", [0, 0, 8, 8],
                    [[1.0, 1.0]] * 5, 0.99, "v1")


def person_vectors(rng, n_people, per, dim=512, noise=0.5):
    centres = rng.normal(size=(n_people, dim))
    v = np.repeat(centres, per, axis=0) + noise * rng.normal(size=(n_people * per, dim))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(n_people), per)


@pytest.fixture
def stores(gallery_db):
    engine = make_engine(database_url(gallery_db))
    migrate(engine)
    gallery = GalleryStore(engine)
    yield gallery, UnknownStore(gallery)
    engine.dispose()


def test_online_refine_enroll_and_reembed(stores):
    gallery, unknown = stores
    rng = np.random.default_rng(0)
    v, truth = person_vectors(rng, 4, 5)
    order = rng.permutation(len(v))
    kept = {}
    for i in order.tolist():
        [k] = unknown.keep([(crop(i), {"v1": v[i]})], "v1", 0.5)
        kept[k.face_id] = i
    rev, face_ids, old, dismissed, vectors = unknown.snapshot("v1")
    assert len(face_ids) == 20 and not dismissed.any()
    assert len({(truth[kept[f]], c) for f, c in zip(face_ids.tolist(), old.tolist())}) == 4  # online: one per person
    new = average_linkage(vectors, 0.5)
    unknown.keep([(crop(99), {"v1": v[0]})], "v1", 0.5)  # a write meanwhile: the refine must start again
    assert not unknown.apply(rev, face_ids, old, new)
    rev, face_ids, old, _, vectors = unknown.snapshot("v1")
    assert unknown.apply(rev, face_ids, old, average_linkage(vectors, 0.5))
    page, total = unknown.list_clusters(0, 10)
    assert total == 4 and sorted(c["size"] for c in page) == [5, 5, 5, 6]

    biggest = page[0]
    ident, faces, created = unknown.enroll(biggest["id"], "someone", None)
    assert created and len(faces) == biggest["size"] and gallery.face_count(ident.id) == biggest["size"]
    assert set(gallery.templates("v1")) == {ident.id}
    assert unknown.get_cluster(biggest["id"]) is None
    with pytest.raises(NotFound):
        unknown.enroll(biggest["id"], "someone", None)
    with pytest.raises(NotFound):
        unknown.enroll(page[2]["id"], None, 10**6)
    assert unknown.get_cluster(page[2]["id"]) is not None  # nothing changed

    assert unknown.dismiss(page[1]["id"])
    rev, face_ids, old, dismissed, vectors = unknown.snapshot("v1")
    assert dismissed.sum() == page[1]["size"]
    unknown.apply(rev, face_ids, old, average_linkage(vectors, 0.99, np.where(dismissed, old, -1)))
    assert unknown.get_cluster(page[1]["id"])[0]["size"] == page[1]["size"]  # kept together at any threshold

    left = unknown.counts()["faces"]
    batches = list(unknown.faces_missing("v2", batch=7))
    assert sum(len(b) for b in batches) == left
    assert sum(unknown.add_embeddings("v2", {fid: v[0] for fid, _ in b}) for b in batches) == left
    assert unknown.versions() == {"v1": left, "v2": left}
    assert unknown.prune_versions({"v2"}) == left and unknown.versions() == {"v2": left}
    assert unknown.purge() == left and unknown.counts() == {"faces": 0, "clusters": 0}


def test_the_cap_is_looked_at_every_32nd_of_it_and_holds_within_that(stores):
    """FACEID_UNKNOWN_MAX_FACES: the oldest go, looked for once per cap // 32 faces kept (a 50,000-row read per
    keep otherwise); the table never holds more than the cap plus that share."""
    gallery, unknown = stores
    rng = np.random.default_rng(1)
    v, _ = person_vectors(rng, 40, 5)
    cap, held = 64, []
    for i in range(len(v)):
        unknown.keep([(crop(i), {"v1": v[i]})], "v1", 0.5, max_faces=cap)
        held.append(len(unknown.snapshot("v1")[1]))
    assert max(held) <= cap + cap // 32 and held[-1] >= cap
    assert cap + 1 in held  # not looked at on every keep: past the cap by one between two looks
    assert held.count(cap) >= (len(v) - cap) // (cap // 32) - 1  # looked at, and cut back to the cap, every 2 faces
    _, face_ids, *_ = unknown.snapshot("v1")
    assert face_ids.min() > len(v) - cap - cap // 32  # the oldest went


def test_a_photo_s_face_is_kept_once_and_again_after_it_expired(stores):
    from dataclasses import replace
    from datetime import timedelta

    from app.gallery.models import utcnow

    gallery, unknown = stores
    v, _ = person_vectors(np.random.default_rng(2), 2, 1)
    [a] = unknown.keep([(crop(7), {"v1": v[0]})], "v1", 0.5, retention_s=60)
    [b] = unknown.keep([(crop(7), {"v1": v[0]})], "v1", 0.5, retention_s=60)
    assert not a.again and (b.face_id, b.cluster_id, b.again) == (a.face_id, a.cluster_id, True)
    [c] = unknown.keep([(replace(crop(7), box=[100.0, 100.0, 140.0, 140.0]), {"v1": v[1]})], "v1", 0.5)
    assert not c.again and c.face_id != a.face_id  # another face of the same photo
    assert len(unknown.snapshot("v1")[1]) == 2
    assert unknown.prune_expired(now=utcnow() + timedelta(seconds=61)) == 1
    [d] = unknown.keep([(crop(7), {"v1": v[0]})], "v1", 0.5)
    assert not d.again and d.face_id != a.face_id


def test_a_face_does_not_join_a_cluster_whose_faces_have_all_expired(stores):
    """With a retention every keep deletes the expired faces first: a new face of the same person starts a cluster
    of its own rather than keeping an expired one's (its id, its dismissal) alive."""
    gallery, unknown = stores
    v, _ = person_vectors(np.random.default_rng(3), 1, 2, noise=0.05)
    [a] = unknown.keep([(crop(1), {"v1": v[0]})], "v1", 0.5, retention_s=1e-6)  # expired as soon as it is kept
    assert unknown.dismiss(a.cluster_id)
    [b] = unknown.keep([(crop(2), {"v1": v[1]})], "v1", 0.5, retention_s=60)
    assert not b.joined and b.cluster_id != a.cluster_id
    assert unknown.get_cluster(a.cluster_id) is None


def test_the_background_loop_logs_an_outage_in_one_line_and_goes_on(postgres, caplog):
    """The refiner's loop with PostgreSQL stopped under it: one warning without a traceback per wake (as the
    events service logs an outage), the loop still runs, and after the restart the store prunes again."""
    import asyncio
    import logging

    from app.core.config import Settings
    from app.services.unknown import UnknownService

    engine = make_engine(database_url(postgres.create_database()))
    migrate(engine)
    service = UnknownService(Settings(unknown_refine_interval_s=3600), UnknownStore(GalleryStore(engine)), None)

    async def wait_for(predicate, timeout=60.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            assert asyncio.get_running_loop().time() < deadline, caplog.text
            await asyncio.sleep(0.05)

    async def scenario():
        task = asyncio.create_task(service.run())
        try:
            postgres.stop()
            try:
                service._wake.set()
                await wait_for(lambda: any("unknown faces: database unavailable" in r.getMessage()
                                           for r in caplog.records))
                assert task.done() is False
            finally:
                postgres.start()
            engine.dispose()  # the pool's connections died with the server
            assert service.store.prune_expired() == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="app.services.unknown"):
        asyncio.run(scenario())
    outage = [r for r in caplog.records if "unknown faces: database unavailable" in r.getMessage()]
    assert outage and all(r.exc_info is None for r in outage)
    assert not any("refining the unknown clusters failed" in r.getMessage() for r in caplog.records)
    engine.dispose()
