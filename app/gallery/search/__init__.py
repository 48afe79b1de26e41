"""Gallery search: the backend interface (`base`) and its two implementations, in memory (`memory`) and in
PostgreSQL with pgvector (`pgvector`). `make_search` picks the one for a database."""
from __future__ import annotations

from app.gallery.search.base import Match, SearchBackend, VersionSearch, cosine

__all__ = ["Match", "SearchBackend", "VersionSearch", "cosine", "make_search"]


def make_search(settings, store, hub=None):
    """(search backend, change feed) for this database: in memory + polling on SQLite, pgvector +
    LISTEN/NOTIFY on PostgreSQL (a collection's through `hub`, the NotifyHub all collections share)."""
    from app.gallery.notify import NotifyChanges, PollingChanges

    if not store.is_postgres:
        from app.gallery.search.memory import MemorySearch

        return MemorySearch(store, settings.identity_scoring), PollingChanges()
    from app.gallery.search.pgvector import PgVectorSearch

    changes = (hub.subscribe(store.channel, store.schema) if hub is not None and store.schema
               else NotifyChanges(store.engine, channel=store.channel, schema=store.schema))
    return PgVectorSearch(store, changes, scoring=settings.identity_scoring, ef_search=settings.pgvector_ef_search,
                          exact_below=settings.pgvector_exact_below, hnsw_m=settings.pgvector_hnsw_m,
                          hnsw_ef_construction=settings.pgvector_hnsw_ef_construction), changes
