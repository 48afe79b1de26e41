"""The interface identify and verify search the gallery through, whatever holds the vectors.

`index.get(version, dim)` gives that model version's searchable gallery; two implementations:
the in-memory exact index, refreshed from the database (`app.services.recognition.LiveIndex` over
`app.gallery.index.VectorIndex`; the SQLite default), and pgvector inside PostgreSQL
(`app.gallery.pgvector_index.PgVectorIndex`; no process holds vectors in RAM, start-up loads nothing).
Both give the same answers with the same scores (cosine similarity, re-scored in float32); tests/app/test_postgres.py
checks one against the other.
"""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
from sqlalchemy.orm import Session

from app.gallery.index import Match


class VersionSearch(Protocol):
    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        """Per query, the top-k identities, best first."""

    def scores_for_identity(self, query: np.ndarray, identity_id: int) -> float | None:
        """The query's score against one identity (None: no vectors of this version for it)."""

    def __len__(self) -> int:
        """Vectors searchable under this version."""


class GallerySearch(Protocol):
    def get(self, version: str, dim: int = 512) -> VersionSearch:
        """The version's searchable gallery, made ready first (loaded, or its index built) if needed."""

    def serving_hook(self, version: str, dim: int) -> Callable[[Session], None] | None:
        """What must commit in the same transaction as the switch of the serving model to `version`."""

    def drop(self, keep: set[str]) -> None:
        """Forget (in memory) or drop the indexes of (PostgreSQL) the versions not in `keep`."""

    def close(self) -> None:
        """Release what the index holds."""
