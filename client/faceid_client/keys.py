"""API keys as the server stores them: scopes, and a key's settings entry (its SHA-256, never the key).
Shared by the server (`app.core.security` checks keys with `hash_key`) and `faceid keys new`, which needs no
server. Standard library only."""
from __future__ import annotations

import hashlib
import secrets

from faceid_client.collection_names import check_collection_name

SCOPES = ("identify", "read", "write", "admin")  # cumulative: each includes those before it


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str, scopes: list[str], collections: list[str] | None = None) -> tuple[str, dict]:
    """A random key and its settings entry for FACEID_API_KEYS; ValueError for an unknown scope or a name that is
    not a collection's. `collections`: the key is bound to these (403 on the others and on service-wide routes);
    None or empty: unbound, no `collections` in the entry."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"scopes must be among {SCOPES}")
    bound = list(dict.fromkeys(check_collection_name(c) for c in collections or ()))  # once each, in order
    key = secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": hash_key(key), "scopes": list(scopes)}
    return key, ({**entry, "collections": bound} if bound else entry)
