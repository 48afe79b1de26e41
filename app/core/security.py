"""API keys with scopes. Keys are stored as SHA-256 hashes in settings and compared in constant time.

Scopes are cumulative: `identify` (identify and verify only: no stored crops, embeddings or gallery
listing), `read` (adds embed and reading the gallery), `write` (adds enroll, rename, delete), `admin`
(adds model swap, reindex). With no keys configured the service is open, and answers only requests that
arrive on a loopback address.

    python -m app.core.security new-key --name door-1 --scopes read,write [--collections doors,lobby]

A key may be bound to collections (`collections` in its entry): then it reaches only their gallery routes.
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import re
import secrets
import sys
from typing import Annotated

from fastapi import Depends, FastAPI, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader
from starlette.routing import Match
from pydantic import BaseModel, Field, field_validator

from app.core.errors import AppError
from faceid_client.keys import SCOPES, hash_key

_COLLECTION_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # as app/services/collections.NAME_PATTERN
_IMPLIES = {scope: set(SCOPES[:i + 1]) for i, scope in enumerate(SCOPES)}  # each includes those before it


class ApiKey(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[str] = Field(default_factory=lambda: ["read"])
    # the collections it may reach (None: all of them and the service-wide routes; app/services/collections.py)
    collections: list[str] | None = None

    @field_validator("collections")
    @classmethod
    def _collection_names(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        bad = [n for n in names if not _COLLECTION_NAME.fullmatch(n)]
        if bad or not names:  # an empty list would be a key that reaches nothing: surely a mistake
            raise ValueError(f"collections must be a non-empty list of collection names; got {names}")
        return names

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, scopes: list[str]) -> list[str]:
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown:  # a typo ("wirte") must not silently grant less, or more, than meant
            raise ValueError(f"unknown scope(s) {unknown}; scopes are {list(SCOPES)}")
        return scopes

    def granted(self) -> set[str]:
        out: set[str] = set()
        for s in self.scopes:
            out |= _IMPLIES.get(s, set())
        return out


def find_key(presented: str | None, keys: list[ApiKey]) -> ApiKey | None:
    if not presented:
        return None
    digest = hash_key(presented)
    found = None
    for k in keys:  # no early exit: time does not depend on which key matched
        if hmac.compare_digest(digest, k.sha256):
            found = k
    return found


def is_loopback_address(host: str | None) -> bool:
    """True for loopback IPs; also for non-IP "addresses" (a Unix socket path, an in-process test
    transport), which are not reachable from the network."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host != "0.0.0.0"


class LoopbackOnlyMiddleware:
    """For a keyless server: answer only requests that arrived on a loopback address.

    The check uses the local address of each connection (ASGI scope["server"]), so it holds however the
    server was started (`uvicorn --host 0.0.0.0`, gunicorn, the entrypoint), not only for FACEID_HOST."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = (scope.get("server") or (None, None))[0]
            if not is_loopback_address(host):
                from app.core.errors import error_response

                resp = error_response(403, "keyless_non_loopback", f"this server has no API keys and answers "
                                      f"only on a loopback address; the request arrived on {host}. Set "
                                      "FACEID_API_KEYS to serve the network")
                return await resp(scope, receive, send)
        await self.app(scope, receive, send)


api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="APIKeyHeader",
                              description="an API key (python -m app.core.security new-key); not needed on a "
                                          "keyless loopback-only server")


def authorize(request: Request, scope: str) -> ApiKey | None:
    """The request's key if it grants `scope`: 401 without a valid key, 403 without the scope. None when
    the server has no keys (open, loopback only)."""
    keys = request.app.state.settings.api_keys
    if not keys:
        return None
    key = find_key(request.headers.get("x-api-key"), keys)
    if key is None:
        raise AppError(401, "unauthorized", "a valid X-API-Key header is required",
                       headers={"WWW-Authenticate": "ApiKey"})
    if scope not in key.granted():
        raise AppError(403, "forbidden", f"this key lacks the '{scope}' scope")
    if key.collections is not None:
        _check_collection(request, key)
    request.state.api_key_name = key.name
    return key


def _check_collection(request: Request, key: ApiKey) -> None:
    """A key bound to collections reaches their gallery routes only: 403 on another collection's, and on the
    service-wide routes (model swap, webhooks, the collections themselves)."""
    name = request.scope.get("path_params", {}).get("collection")
    if name is None:
        route = request.scope.get("route")
        if getattr(route, "path", None) in getattr(request.app.state, "gallery_paths", ()):
            name = "default"  # an unprefixed gallery route: the default collection's
    if name is None:
        if request.method == "GET" and getattr(request.scope.get("route"), "path", None) == "/collections":
            return  # the list: a bound key is shown its own collections (app/api/routes/collections.py)
        raise AppError(403, "collection_forbidden", f"this key is bound to the collections {key.collections}; "
                       "service-wide routes need a key bound to none")
    if name not in key.collections:
        raise AppError(403, "collection_forbidden", f"this key is bound to the collections {key.collections}, "
                       f"not {name!r}")


def require(scope: str):
    """Dependency: the request's X-API-Key must grant `scope`. Declared through APIKeyHeader, so the OpenAPI
    document carries the security scheme (Swagger UI's "Authorize" sends the header)."""
    if scope not in SCOPES:
        raise ValueError(scope)

    def check(request: Request, _presented: str | None = Security(api_key_header)) -> ApiKey | None:
        return authorize(request, scope)

    check.faceid_scope = scope
    return check


def _api_routes(routes):
    """(matcher, APIRoute) for every route, including those of included routers, matched with their prefixes
    (FastAPI >= 0.16x includes routers lazily: `effective_candidates` are the routes as included)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route, route
        elif hasattr(route, "effective_candidates"):
            for candidate in route.effective_candidates():
                if hasattr(candidate, "effective_candidates"):
                    yield from _api_routes([candidate])
                elif isinstance(getattr(candidate, "original_route", None), APIRoute):
                    yield candidate, candidate.original_route
        elif hasattr(route, "original_router"):
            yield from _api_routes(route.original_router.routes)


class KeyFirstMiddleware:
    """FastAPI reads and validates a JSON body before a route's dependencies run, so a client without a key
    would learn 422 (or 400) about its body instead of 401. This checks the matched route's key scopes
    (its `require(...)` dependencies) before the route touches the body."""

    def __init__(self, app, routes_of: FastAPI):
        self.app, self.routes_of = app, routes_of
        self._keyed: list | None = None

    def _scopes(self, scope) -> tuple[APIRoute | None, dict, list[str]]:
        if self._keyed is None:  # built on first use: routers are included after the middleware is added
            self._keyed = [(m, r, scopes) for m, r in _api_routes(self.routes_of.routes)
                           if (scopes := [d.call.faceid_scope for d in r.dependant.dependencies
                                          if hasattr(d.call, "faceid_scope")])]
        for matcher, route, scopes in self._keyed:
            match, child = matcher.matches(scope)
            if match == Match.FULL:
                return route, {**child, "route": route}, scopes
        return None, {}, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["app"].state.settings.api_keys:
            route, child, needed_scopes = self._scopes(scope)
            try:
                request = Request({**scope, **child})  # its path parameters (the collection), as the route sees them
                for needed in needed_scopes:
                    authorize(request, needed)
            except AppError as exc:
                scope["route"] = route  # metrics and the access log count the refusal under its route
                from app.core.errors import error_response

                resp = error_response(exc.status, exc.code, exc.message, headers=exc.headers)
                return await resp(scope, receive, send)
        await self.app(scope, receive, send)


def presented_key(request: Request) -> ApiKey | None:
    """The valid key the request carries, whatever its scope (None without one, or on a keyless server)."""
    return find_key(request.headers.get("x-api-key"), request.app.state.settings.api_keys)


def requester(request: Request, key: ApiKey | None) -> str:
    """Who is asking, for what they may later refer back to (their probes): the key's name, or the client
    address on a keyless server."""
    if key is not None:
        return key.name
    return f"client:{request.client.host if request.client else '-'}"


IdentifyKey = Annotated[ApiKey | None, Depends(require("identify"))]
ReadKey = Annotated[ApiKey | None, Depends(require("read"))]
WriteKey = Annotated[ApiKey | None, Depends(require("write"))]
AdminKey = Annotated[ApiKey | None, Depends(require("admin"))]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.core.security", description="API key helper")
    sub = ap.add_subparsers(dest="cmd", required=True)
    new = sub.add_parser("new-key", help="make a random key; print it once and its settings entry")
    new.add_argument("--name", required=True)
    new.add_argument("--scopes", default="read", help=f"comma-separated, from {SCOPES}")
    new.add_argument("--collections", default=None, help="comma-separated collection names the key is bound to "
                     "(default: all, and the service-wide routes)")
    h = sub.add_parser("hash", help="hash an existing key read from stdin")
    h.add_argument("--name", required=True)
    h.add_argument("--scopes", default="read")
    h.add_argument("--collections", default=None)
    args = ap.parse_args(argv)
    scopes = [s for s in args.scopes.split(",") if s]
    if any(s not in SCOPES for s in scopes):
        print(f"error: scopes must be among {SCOPES}", file=sys.stderr)
        return 2
    key = secrets.token_urlsafe(32) if args.cmd == "new-key" else sys.stdin.readline().strip()
    entry = {"name": args.name, "sha256": hash_key(key), "scopes": scopes}
    if args.collections:
        names = [c for c in args.collections.split(",") if c]
        if not names or any(not _COLLECTION_NAME.fullmatch(c) for c in names):
            print("error: --collections takes comma-separated collection names", file=sys.stderr)
            return 2
        entry["collections"] = names
    if args.cmd == "new-key":
        print(f"key (shown once, give it to the client): {key}")
    print("settings entry (add to the FACEID_API_KEYS JSON list):")
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    sys.exit(main())
