"""Identity pairs said not to be the same person ("not a duplicate"), on the gallery's database.

Not part of the index (no generation bump): they only stop a pair being suggested as a duplicate and being
left out of the gallery's impostor tail. A pair goes with either identity (foreign keys, ON DELETE CASCADE).
"""
from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError

from app.gallery.models import DistinctPair, Identity
from app.gallery.store import GalleryStore, NotFound
from model.duplicates import pair_key


class DistinctPairs:
    def __init__(self, store: GalleryStore):
        self.sessions = store.sessions
        self.is_postgres = store.is_postgres

    def all(self) -> set[tuple[int, int]]:
        with self.sessions() as s:
            return {(a, b) for a, b in s.execute(select(DistinctPair.identity_a, DistinctPair.identity_b))}

    def add(self, a: int, b: int) -> bool:
        """Remember that identities `a` and `b` are different people. False when it was known already;
        NotFound when either identity does not exist."""
        a, b = pair_key(a, b)
        ins = (pg_insert if self.is_postgres else sqlite_insert)(DistinctPair)
        try:
            with self.sessions() as s, s.begin():
                for i in (a, b):
                    if s.get(Identity, i) is None:
                        raise NotFound("identity", i)
                done = s.execute(ins.values(identity_a=a, identity_b=b).on_conflict_do_nothing())
                return done.rowcount == 1
        except IntegrityError:  # one was deleted between the check and the insert (its foreign key refused it)
            missing = [i for i in (a, b) if not self._exists(i)]
            raise NotFound("identity", missing[0] if missing else a) from None

    def _exists(self, identity_id: int) -> bool:
        with self.sessions() as s:
            return s.get(Identity, identity_id) is not None

    def remove(self, a: int, b: int) -> bool:
        a, b = pair_key(a, b)
        with self.sessions() as s, s.begin():
            return s.execute(delete(DistinctPair).where(DistinctPair.identity_a == a,
                                                        DistinctPair.identity_b == b)).rowcount == 1
