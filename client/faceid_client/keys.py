"""API keys as the server stores them: scopes, and a key's settings entry (its SHA-256, never the key).
Shared by the server (`app.core.security` checks keys with `hash_key`) and `faceid keys new`, which needs no
server. Standard library only."""
from __future__ import annotations

import hashlib
import secrets

SCOPES = ("identify", "read", "write", "admin")  # cumulative: each includes those before it


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(name: str, scopes: list[str]) -> tuple[str, dict]:
    """A random key and its settings entry for FACEID_API_KEYS; ValueError for an unknown scope."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"scopes must be among {SCOPES}")
    key = secrets.token_urlsafe(32)
    return key, {"name": name, "sha256": hash_key(key), "scopes": list(scopes)}
