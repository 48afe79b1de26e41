"""API keys with scopes. Keys are stored as SHA-256 hashes in settings and compared in constant time.

Scopes are cumulative: `write` includes `read`, `admin` includes both. With no keys configured the
service is open, which create_app() allows only on a loopback address.

    python -m app.core.security new-key --name door-1 --scopes read,write
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel, Field

from app.core.errors import AppError

SCOPES = ("read", "write", "admin")
_IMPLIES = {"read": {"read"}, "write": {"read", "write"}, "admin": {"read", "write", "admin"}}


class ApiKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(default_factory=lambda: ["read"])

    def granted(self) -> set[str]:
        out: set[str] = set()
        for s in self.scopes:
            out |= _IMPLIES.get(s, set())
        return out


AuthError = AppError  # deprecated alias, kept until branches written against it have rebased


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def find_key(presented: str | None, keys: list[ApiKey]) -> ApiKey | None:
    if not presented:
        return None
    digest = hash_key(presented)
    found = None
    for k in keys:  # no early exit: time does not depend on which key matched
        if hmac.compare_digest(digest, k.sha256):
            found = k
    return found


def require(scope: str):
    """Dependency: the request's X-API-Key must grant `scope` (401 without a valid key, 403 without the scope)."""
    if scope not in SCOPES:
        raise ValueError(scope)

    def check(request: Request) -> ApiKey | None:
        keys = request.app.state.settings.api_keys
        if not keys:
            return None
        key = find_key(request.headers.get("x-api-key"), keys)
        if key is None:
            raise AppError(401, "unauthorized", "a valid X-API-Key header is required")
        if scope not in key.granted():
            raise AppError(403, "forbidden", f"this key lacks the '{scope}' scope")
        request.state.api_key_name = key.name
        return key

    return check


ReadKey = Annotated[ApiKey | None, Depends(require("read"))]
WriteKey = Annotated[ApiKey | None, Depends(require("write"))]
AdminKey = Annotated[ApiKey | None, Depends(require("admin"))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.core.security", description="API key helper")
    sub = ap.add_subparsers(dest="cmd", required=True)
    new = sub.add_parser("new-key", help="make a random key; print it once and its settings entry")
    new.add_argument("--name", required=True)
    new.add_argument("--scopes", default="read", help=f"comma-separated, from {SCOPES}")
    h = sub.add_parser("hash", help="hash an existing key read from stdin")
    h.add_argument("--name", required=True)
    h.add_argument("--scopes", default="read")
    args = ap.parse_args(argv)
    scopes = [s for s in args.scopes.split(",") if s]
    if any(s not in SCOPES for s in scopes):
        print(f"error: scopes must be among {SCOPES}", file=sys.stderr)
        return 2
    key = secrets.token_urlsafe(32) if args.cmd == "new-key" else sys.stdin.readline().strip()
    entry = {"name": args.name, "sha256": hash_key(key), "scopes": scopes}
    if args.cmd == "new-key":
        print(f"key (shown once, give it to the client): {key}")
    print("settings entry (add to the FACEID_API_KEYS JSON list):")
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
