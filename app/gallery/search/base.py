"""What identify and verify search the gallery through, whatever holds the vectors.

A `SearchBackend` gives each model version's `VersionSearch`; two backends: `memory.MemorySearch` (every process
holds the vectors, the SQLite default) and `pgvector.PgVectorSearch` (PostgreSQL searches them; no process holds
vectors in RAM). Both give the same answers with the same scores (cosine similarity, re-scored in float32);
tests/app/test_postgres.py checks one against the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Match:
    identity_id: int
    label: str
    face_id: int
    score: float


def cosine(score: float) -> float:
    """A similarity as answers report it: float rounding (float16 storage, sums of unit vectors) can put a
    cosine a hair outside [-1, 1]; answers never do."""
    return min(1.0, max(-1.0, float(score)))


class VersionSearch(Protocol):
    """One model version's searchable gallery."""
    version: str
    dim: int
    scoring: str  # "template" (each identity by its template) or "face" (by its best face)

    def sync(self) -> None:
        """Catch up with the gallery's writes (memory: new rows, touched identities; pgvector: nothing to do)."""

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Match]]:
        """Per query, the top-k identities, best first."""

    def scores_for_identity(self, query: np.ndarray, identity_id: int) -> float | None:
        """The query's score against one identity (None: no vectors of this version for it)."""

    def __len__(self) -> int:
        """Vectors searchable under this version."""

    @property
    def identities(self) -> int:
        """Identities a search compares against (what the operating point depends on)."""

    def sample(self, max_faces: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, identity ids) of every face of a random subset of identities, at most `max_faces` faces."""


class SearchBackend(Protocol):
    scoring: str

    def version(self, version: str, dim: int = 512) -> VersionSearch:
        """The version's search, made ready first (loaded, or its index built) if needed."""

    def prepare_switch(self, version: str, dim: int) -> Callable[[Session], None] | None:
        """What must commit in the same transaction as the switch of the serving model to `version`."""

    def held(self) -> set[str]:
        """The versions this process holds something of (vectors, caches, prepared statements)."""

    def retire(self, keep: set[str]) -> None:
        """Forget what this process holds of the versions not in `keep` (memory, caches, prepared statements)."""

    def drop_indexes(self, keep: set[str]) -> None:
        """Drop what the database holds for the versions not in `keep` (pgvector: their HNSW indexes)."""

    def reindex(self, version: str, dim: int = 512) -> None:
        """Rebuild the version's index while searches go on with the old one."""

    def close(self) -> None:
        """Release what the backend holds."""
