"""Kept unknown faces and their clusters: storage on the gallery's database, beside the gallery but not searched.

Every write bumps `gallery_state.unknown_revision` first (SQLite's write lock, a row lock on PostgreSQL), so
writers take turns and a process's cached clusters (`_Cache`: the sums and sizes of one model version's
clusters, for the online step) are current exactly when the revision before its own write is the one it last
saw; otherwise it reloads them inside that transaction. Nothing here touches the gallery's generation, except
enrolling a cluster, which is a gallery write (`GalleryStore.enroll`).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import bindparam, delete, exists, func, insert, select, update
from sqlalchemy.orm import Session

from app.gallery.feedback import FaceCrop
from app.gallery.models import GalleryState, Identity, UnknownCluster, UnknownEmbedding, UnknownFace, utcnow
from app.gallery.store import GalleryStore, NewFace, NotFound, bytes_to_matrix, png_to_crop, vector_to_bytes
from model.align import box_iou
from model.clustering import OnlineClusters

SAME_BOX_IOU = 0.8  # a face of a photo kept already: the same photo (sha256) and about the same box
EXPIRY_LOOK_S = 1.0  # without a retention `keep` deletes expired faces (of an earlier one) at most this often
_CLUSTERS, _FACES, _EMBEDDINGS = UnknownCluster.__table__, UnknownFace.__table__, UnknownEmbedding.__table__


@dataclass
class KeptFace:
    face_id: int
    cluster_id: int
    joined: bool      # joined an existing cluster (False: started its own)
    again: bool = False  # kept before (the same photo's face): nothing was written


@dataclass
class _Cache:
    version: str
    threshold: float
    revision: int
    clusters: OnlineClusters


class _Ride:
    """One `UnknownStore.riding(...)`: its keep, done inside another transaction, and whether that committed."""

    def __init__(self, store: "UnknownStore", args: tuple):
        self.store, self.args = store, args  # `_keep`'s arguments after the session
        self.before: int | None = None
        self.out: list[KeptFace | None] | None = None
        self.picked: list[int] | None = None  # the caller's: which of its faces these are
        self.committed = False

    def keep(self, s: Session) -> None:
        if self.args[0]:
            self.before, self.out = self.store._keep(s, *self.args)


class UnknownStore:
    def __init__(self, store: GalleryStore):
        self.gallery = store
        self.sessions = store.sessions
        self._lock = threading.Lock()
        self._cache: _Cache | None = None
        self._since_cap_check = 0  # faces kept by this process since `keep` last looked for its cap
        self._expiry_looked = float("-inf")  # when `keep` last deleted expired faces (time.monotonic())

    # --- revision and the cached clusters ------------------------------------------------------------------
    @staticmethod
    def _bump(s: Session) -> int:
        """Take the write lock; the revision before this write."""
        after = s.scalar(update(GalleryState).where(GalleryState.id == 1)
                         .values(unknown_revision=GalleryState.unknown_revision + 1)
                         .returning(GalleryState.unknown_revision).execution_options(synchronize_session=False))
        return (after or 1) - 1

    def _clusters(self, s: Session, before: int, version: str, threshold: float, dim: int) -> OnlineClusters:
        c = self._cache
        if c is None or c.revision != before or c.version != version or c.threshold != threshold:
            oc = OnlineClusters(threshold, dim)
            rows = s.execute(select(UnknownFace.cluster_id, UnknownEmbedding.vector)
                             .join(UnknownEmbedding, UnknownEmbedding.face_id == UnknownFace.id)
                             .where(UnknownEmbedding.model_version == version)).all()
            if rows:  # per cluster the sum of its vectors and its size, in one pass over the faces
                keys, inv = np.unique(np.array([r[0] for r in rows]), return_inverse=True)
                sums = np.zeros((len(keys), dim), np.float32)
                np.add.at(sums, inv, bytes_to_matrix([r[1] for r in rows]))
                for cid, total, size in zip(keys.tolist(), sums, np.bincount(inv).tolist(), strict=True):
                    oc.add(cid, total, float(size))
            self._cache = c = _Cache(version, threshold, before, oc)
        return c.clusters

    def _written(self, before: int) -> None:
        """This process's write (after `before`) committed with its cache kept up to date."""
        if self._cache is not None:
            self._cache.revision = before + 1

    def _forget(self) -> None:
        self._cache = None

    def _write(self, fn):
        """Run `fn(session)` in a write transaction that invalidates the cached clusters (membership changes the
        online step does not follow); the reserve lets deletes run on a full disk."""
        def run():
            with self._lock:
                self._forget()
                with self.sessions() as s, s.begin():
                    self._bump(s)
                    return fn(s)
        return self.gallery.reserve.freeing(run)

    # --- keeping faces (the online step) ----------------------------------------------------------------
    def keep(self, faces: list[tuple[FaceCrop, dict[str, np.ndarray]]], version: str, threshold: float,
             retention_s: float = 0.0, max_faces: int | None = None) -> list[KeptFace | None]:
        """Store faces (crop, embeddings by model version) in one transaction; each joins the cluster its
        `version` embedding scores highest with on average when that reaches `threshold`, else starts its own.
        Expired faces go first (without a retention, looked for once per EXPIRY_LOOK_S); past `max_faces` the
        oldest are dropped (and clusters left empty: None for a face of this call dropped at once). Finding the
        oldest reads past the newest `max_faces` rows, so the cap is looked at once per `max_faces // 32` faces kept
        (each keep for a cap under 64), as for probes: the table may exceed it by 1/32 (3 %) between looks, and no
        request pays a 50,000-row read."""
        if not faces:
            return []
        with self._lock:
            try:
                with self.sessions() as s, s.begin():
                    before, out = self._keep(s, faces, version, threshold, retention_s, max_faces)
                self._written(before)
                return out
            except BaseException:
                self._forget()
                raise

    @contextmanager
    def riding(self, faces: list[tuple[FaceCrop, dict[str, np.ndarray]]], version: str, threshold: float,
               retention_s: float = 0.0, max_faces: int | None = None):
        """`keep` inside another transaction of the same database (identify's probes: one commit per answer).
        Hold this around that transaction; its `also` calls `ride.keep(session)`; set `ride.committed` once it
        committed. The keep lock is held until then, and the cached clusters follow the commit (or are
        dropped)."""
        ride = _Ride(self, (faces, version, threshold, retention_s, max_faces))
        with self._lock:
            try:
                yield ride
            except BaseException:
                self._forget()
                raise
            if ride.before is not None:
                if ride.committed:
                    self._written(ride.before)
                else:
                    self._forget()

    def _keep(self, s: Session, faces, version: str, threshold: float, retention_s: float,
              max_faces: int | None) -> tuple[int, list[KeptFace | None]]:
        """`keep`'s writes in `s` (under `_lock`): (the revision before them, the kept faces)."""
        now = utcnow()
        expires = now + timedelta(seconds=retention_s) if retention_s > 0 else None
        dim = len(next(iter(faces[0][1].values())))
        before = self._bump(s)
        oc = self._clusters(s, before, version, threshold, dim)
        # expired faces out first, so that no face joins a cluster whose faces have all expired; with no retention
        # (the default) only faces kept under an earlier one can expire: looked for once per EXPIRY_LOOK_S
        if retention_s > 0 or time.monotonic() - self._expiry_looked >= EXPIRY_LOOK_S:
            self._expiry_looked = time.monotonic()
            self._drop(s, oc, version, UnknownFace.expires_at < now)
        out = []
        seen = self._seen(s, [crop for crop, _ in faces], now)
        for crop, vectors in faces:
            again = next((k for box, k in seen.get(crop.source_sha256, ())
                          if box_iou(box, crop.box) >= SAME_BOX_IOU), None)
            if again is not None:  # this photo's face is kept already: once, however often it is sent
                out.append(again)
                continue
            v = vectors[version]
            cid = oc.assign(v)
            joined = cid is not None
            # Core inserts (no unit of work to flush: this runs inside a request's commit)
            if cid is None:
                cid = s.execute(insert(_CLUSTERS).values(dismissed=False, created_at=now, updated_at=now)
                                ).inserted_primary_key[0]
            else:
                s.execute(update(_CLUSTERS).where(_CLUSTERS.c.id == cid).values(updated_at=now))
            face_id = s.execute(insert(_FACES).values(cluster_id=cid, created_at=now, expires_at=expires,
                                                      **crop.columns())).inserted_primary_key[0]
            s.execute(insert(_EMBEDDINGS), [{"face_id": face_id, "model_version": ver, "vector": vector_to_bytes(vec)}
                                            for ver, vec in vectors.items()])
            oc.add(cid, v)
            out.append(KeptFace(face_id, cid, joined))
        if max_faces is not None and self._cap_due(len(faces), max_faces):
            cutoff = s.scalar(select(UnknownFace.id).order_by(UnknownFace.id.desc()).offset(max_faces).limit(1))
            if cutoff is not None:
                self._drop(s, oc, version, UnknownFace.id <= cutoff)
                out = [k if k is not None and k.face_id > cutoff else None for k in out]
        return before, out

    @staticmethod
    def _seen(s: Session, crops: list, now) -> dict[str, list[tuple[list, KeptFace]]]:
        """The faces kept already (and not expired) of these crops' photos: source sha256 -> [(box, KeptFace)]."""
        rows = s.execute(select(UnknownFace.id, UnknownFace.cluster_id, UnknownFace.source_sha256, UnknownFace.box)
                         .where(UnknownFace.source_sha256.in_({c.source_sha256 for c in crops}),
                                (UnknownFace.expires_at.is_(None)) | (UnknownFace.expires_at >= now))).all()
        out: dict[str, list] = {}
        for fid, cid, sha, box in rows:
            out.setdefault(sha, []).append((box, KeptFace(fid, cid, True, again=True)))
        return out

    def _cap_due(self, added: int, cap: int) -> bool:
        """Whether this keep looks for the cap (call under `_lock`): once `cap // 32` faces were kept since the last
        look."""
        self._since_cap_check += added
        if self._since_cap_check >= max(1, cap // 32):
            self._since_cap_check = 0
            return True
        return False

    @staticmethod
    def _drop(s: Session, oc: OnlineClusters | None, version: str, where) -> int:
        """Delete the faces matching `where` (their vectors leave `oc`'s sums), then clusters left empty."""
        rows = s.execute(select(UnknownFace.id, UnknownFace.cluster_id, UnknownEmbedding.vector)
                         .outerjoin(UnknownEmbedding, (UnknownEmbedding.face_id == UnknownFace.id)
                                    & (UnknownEmbedding.model_version == version)).where(where)).all()
        if not rows:
            return 0
        ids = [r[0] for r in rows]
        for i in range(0, len(ids), 500):
            s.execute(delete(UnknownFace).where(UnknownFace.id.in_(ids[i:i + 500])))
        if oc is not None:
            for _, cid, blob in rows:
                if blob is not None:
                    oc.add(cid, -np.frombuffer(blob, dtype="<f4"), -1.0)
        emptied = s.scalars(select(UnknownCluster.id).where(
            UnknownCluster.id.in_({r[1] for r in rows}),
            ~exists().where(UnknownFace.cluster_id == UnknownCluster.id))).all()
        if emptied:
            s.execute(delete(UnknownCluster).where(UnknownCluster.id.in_(emptied)))
            if oc is not None:
                for cid in emptied:
                    oc.remove(cid)
        return len(ids)

    def prune_expired(self, now: datetime | None = None) -> int:
        """Delete the faces past their retention (and clusters left empty); how many. Reads first: no write
        (and no lock) when nothing has expired."""
        now = now or utcnow()
        with self.sessions() as s:
            if s.scalar(select(UnknownFace.id).where(UnknownFace.expires_at < now).limit(1)) is None:
                return 0
        return self._write(lambda s: self._drop(s, None, "", UnknownFace.expires_at < now))

    def purge(self) -> int:
        """Delete every kept unknown face and cluster; how many faces."""
        def run(s):
            n = s.scalar(select(func.count(UnknownFace.id))) or 0
            s.execute(delete(UnknownFace))
            s.execute(delete(UnknownCluster))
            return n
        return self._write(run)

    # --- refine (the batch step) ------------------------------------------------------------------------
    def snapshot(self, version: str) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(revision, face ids, cluster ids, dismissed flags, vectors) of the faces with a `version` embedding."""
        with self.sessions() as s:
            rev = s.scalar(select(GalleryState.unknown_revision).where(GalleryState.id == 1)) or 0
            rows = s.execute(select(UnknownFace.id, UnknownFace.cluster_id, UnknownCluster.dismissed,
                                    UnknownEmbedding.vector)
                             .join(UnknownCluster, UnknownCluster.id == UnknownFace.cluster_id)
                             .join(UnknownEmbedding, UnknownEmbedding.face_id == UnknownFace.id)
                             .where(UnknownEmbedding.model_version == version).order_by(UnknownFace.id)).all()
        if not rows:
            return rev, *(np.zeros(0, np.int64),) * 3, np.zeros((0, 0), np.float32)
        return (rev, np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                np.array([bool(r[2]) for r in rows]), bytes_to_matrix([r[3] for r in rows]))

    def apply(self, revision: int, face_ids: np.ndarray, old: np.ndarray, new: np.ndarray,
              cache: tuple[str, float, np.ndarray] | None = None) -> bool:
        """Move faces to the clusters of a refine computed on the snapshot at `revision`: each new group keeps the
        id of the old cluster it overlaps most (each id once), the others are created; emptied clusters go.
        False (nothing changed) when the faces were written meanwhile: refine again. `cache` (version, threshold,
        the snapshot's vectors): the online step's cached clusters are rebuilt from them, not re-read."""
        def run(s):
            now = utcnow()
            overlap: dict[tuple[int, int], int] = {}
            for o, n in zip(old.tolist(), new.tolist()):
                overlap[(n, o)] = overlap.get((n, o), 0) + 1
            target: dict[int, int] = {}
            used: set[int] = set()
            for (n, o), _ in sorted(overlap.items(), key=lambda kv: -kv[1]):
                if n not in target and o not in used:
                    target[n], _ = o, used.add(o)
            for n in sorted(set(new.tolist()) - set(target)):
                cluster = UnknownCluster(dismissed=False, created_at=now, updated_at=now)
                s.add(cluster)
                s.flush()
                target[n] = cluster.id
            moves: dict[int, list[int]] = {}
            for fid, o, n in zip(face_ids.tolist(), old.tolist(), new.tolist()):
                if target[n] != o:
                    moves.setdefault(target[n], []).append(fid)
            for cid, fids in moves.items():
                for i in range(0, len(fids), 500):
                    s.execute(update(UnknownFace).where(UnknownFace.id.in_(fids[i:i + 500])).values(cluster_id=cid))
            s.execute(delete(UnknownCluster).where(~exists().where(UnknownFace.cluster_id == UnknownCluster.id)))
            return target
        with self._lock:
            self._forget()
            with self.sessions() as s, s.begin() as tx:
                if self._bump(s) != revision:
                    tx.rollback()
                    return False
                target = run(s)
            if cache is not None and len(new):  # every face of the version is in the snapshot: rebuild from it
                version, threshold, vectors = cache
                oc = OnlineClusters(threshold, vectors.shape[1])
                for n in np.unique(new):
                    members = new == n
                    oc.add(target[int(n)], vectors[members].sum(axis=0), float(members.sum()))
                self._cache = _Cache(version, threshold, revision + 1, oc)
            return True

    def set_suggestions(self, suggestions: dict[int, tuple[int | None, float | None]]) -> None:
        """{cluster id: (identity id or None, score or None)}; clusters gone meanwhile are skipped. Only the
        suggestions that changed are written (one statement, executed for each): with most faces new, most
        clusters have none, and a statement per cluster held the interpreter lock that requests need."""
        if not suggestions:
            return
        with self.sessions() as s, s.begin():
            ids = list(suggestions)
            now: dict[int, tuple] = {}
            for i in range(0, len(ids), 500):
                now.update((cid, (iid, score)) for cid, iid, score in s.execute(
                    select(UnknownCluster.id, UnknownCluster.suggested_identity_id, UnknownCluster.suggested_score)
                    .where(UnknownCluster.id.in_(ids[i:i + 500]))))
            changed = [{"cid": cid, "iid": iid, "score": score} for cid, (iid, score) in suggestions.items()
                       if cid in now and now[cid] != (iid, score)]
            if changed:
                s.execute(update(_CLUSTERS).where(_CLUSTERS.c.id == bindparam("cid"))
                          .values(suggested_identity_id=bindparam("iid"), suggested_score=bindparam("score")),
                          changed)

    # --- edits --------------------------------------------------------------------------------------------
    def dismiss(self, cluster_id: int) -> bool:
        def run(s):
            return s.execute(update(UnknownCluster).where(UnknownCluster.id == cluster_id)
                             .values(dismissed=True, suggested_identity_id=None, suggested_score=None)).rowcount > 0
        return self._write(run)

    def delete_cluster(self, cluster_id: int) -> bool:
        def run(s):
            s.execute(delete(UnknownFace).where(UnknownFace.cluster_id == cluster_id))
            return s.execute(delete(UnknownCluster).where(UnknownCluster.id == cluster_id)).rowcount > 0
        return self._write(run)

    def delete_face(self, face_id: int) -> bool:
        return self._write(lambda s: self._drop(s, None, "", UnknownFace.id == face_id) > 0)

    def enroll(self, cluster_id: int, label: str | None, identity_id: int | None):
        """The cluster's faces (crops and every embedding) join identity `label` (created if new) or `identity_id`,
        and the cluster is deleted, in one gallery transaction. NotFound('cluster' or 'identity')."""
        def take(s: Session) -> list[NewFace]:
            self._bump(s)
            faces = s.scalars(select(UnknownFace).where(UnknownFace.cluster_id == cluster_id)
                              .order_by(UnknownFace.id)).all()
            if not faces:
                raise NotFound("cluster", cluster_id)
            vectors: dict[int, dict[str, np.ndarray]] = {}
            for fid, ver, blob in s.execute(select(UnknownEmbedding.face_id, UnknownEmbedding.model_version,
                                                   UnknownEmbedding.vector)
                                            .where(UnknownEmbedding.face_id.in_([f.id for f in faces]))).all():
                vectors.setdefault(fid, {})[ver] = np.frombuffer(blob, dtype="<f4").copy()
            out = [NewFace(crop=png_to_crop(f.crop_png), crop_margin=f.crop_margin, source_sha256=f.source_sha256,
                           box=f.box, landmarks=f.landmarks, detection_score=f.detection_score,
                           embeddings=vectors.get(f.id, {})) for f in faces]
            s.execute(delete(UnknownFace).where(UnknownFace.cluster_id == cluster_id))
            s.execute(delete(UnknownCluster).where(UnknownCluster.id == cluster_id))
            return out

        with self._lock:
            self._forget()
            return self.gallery.enroll(label, [], identity_id=identity_id, also=take)

    # --- re-embedding (hot swap) --------------------------------------------------------------------------
    def faces_missing(self, version: str, batch: int = 256):
        """Yield batches of (face id, crop) of kept faces without a `version` embedding."""
        last = 0
        while True:
            with self.sessions() as s:
                have = select(UnknownEmbedding.face_id).where(UnknownEmbedding.model_version == version)
                rows = s.execute(select(UnknownFace.id, UnknownFace.crop_png)
                                 .where(UnknownFace.id > last, UnknownFace.id.not_in(have))
                                 .order_by(UnknownFace.id).limit(batch)).all()
            if not rows:
                return
            last = rows[-1][0]
            yield [(r[0], png_to_crop(r[1])) for r in rows]

    def add_embeddings(self, version: str, vectors: dict[int, np.ndarray]) -> int:
        """Store `version` embeddings of kept faces (faces deleted meanwhile are skipped)."""
        def run(s):
            existing = set(s.scalars(select(UnknownFace.id).where(UnknownFace.id.in_(list(vectors)))))
            have = set(s.scalars(select(UnknownEmbedding.face_id).where(
                UnknownEmbedding.model_version == version, UnknownEmbedding.face_id.in_(list(vectors)))))
            new = [UnknownEmbedding(face_id=fid, model_version=version, vector=vector_to_bytes(v))
                   for fid, v in vectors.items() if fid in existing and fid not in have]
            s.add_all(new)
            return len(new)
        return self._write(run)

    def prune_versions(self, keep: set[str]) -> int:
        return self._write(lambda s: s.execute(delete(UnknownEmbedding)
                                               .where(UnknownEmbedding.model_version.not_in(keep))).rowcount)

    def versions(self) -> dict[str, int]:
        with self.sessions() as s:
            return dict(s.execute(select(UnknownEmbedding.model_version, func.count(UnknownEmbedding.id))
                                  .group_by(UnknownEmbedding.model_version)).all())

    # --- reads --------------------------------------------------------------------------------------------
    def list_clusters(self, offset: int, limit: int, min_faces: int = 1, dismissed: bool = False,
                      representatives: int = 4) -> tuple[list[dict], int]:
        """Clusters of at least `min_faces` faces (dismissed ones, or the others), largest first: (page, total)."""
        with self.sessions() as s:
            size = func.count(UnknownFace.id).label("size")
            q = (select(UnknownCluster, size, func.min(UnknownFace.created_at), func.max(UnknownFace.created_at))
                 .join(UnknownFace, UnknownFace.cluster_id == UnknownCluster.id)
                 .where(UnknownCluster.dismissed.is_(dismissed)).group_by(UnknownCluster.id)
                 .having(func.count(UnknownFace.id) >= min_faces))
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.execute(q.order_by(size.desc(), UnknownCluster.id).offset(offset).limit(limit)).all()
            out = [self._brief(s, c, n, first, last, representatives) for c, n, first, last in rows]
            return out, total

    def _brief(self, s: Session, c: UnknownCluster, size: int, first, last, representatives: int) -> dict:
        faces = s.scalars(select(UnknownFace.id).where(UnknownFace.cluster_id == c.id)
                          .order_by(UnknownFace.detection_score.desc(), UnknownFace.id).limit(representatives)).all()
        label = s.scalar(select(Identity.label).where(Identity.id == c.suggested_identity_id)) \
            if c.suggested_identity_id is not None else None
        suggestion = {"identity": {"id": c.suggested_identity_id, "label": label}, "score": c.suggested_score} \
            if label is not None else None
        return {"id": c.id, "size": int(size), "face_ids": list(faces), "first_seen": first, "last_seen": last,
                "dismissed": bool(c.dismissed), "suggestion": suggestion}

    def get_cluster(self, cluster_id: int) -> tuple[dict, list[UnknownFace]] | None:
        with self.sessions() as s:
            c = s.get(UnknownCluster, cluster_id)
            if c is None:
                return None
            faces = s.scalars(select(UnknownFace).where(UnknownFace.cluster_id == cluster_id)
                              .order_by(UnknownFace.id)).all()
            if not faces:
                return None
            first, last = min(f.created_at for f in faces), max(f.created_at for f in faces)
            return self._brief(s, c, len(faces), first, last, 4), list(faces)

    def get_face(self, face_id: int) -> UnknownFace | None:
        with self.sessions() as s:
            return s.get(UnknownFace, face_id)

    def counts(self) -> dict[str, int]:
        with self.sessions() as s:
            return {"faces": s.scalar(select(func.count(UnknownFace.id))) or 0,
                    "clusters": s.scalar(select(func.count(UnknownCluster.id))) or 0}
