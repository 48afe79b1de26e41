"""What a web page the operator visits may make their browser do to this server.

Two rules, checked before routing (pure ASGI middleware):

- `Host` (keyless servers only): a keyless server listens on loopback, but a page on
  `rebind.evil.example` whose DNS answer flips to 127.0.0.1 reaches it from the operator's own browser with
  its own Host name and reads every answer (DNS rebinding). A keyless server therefore answers only requests
  whose Host is a loopback name or address (`localhost`, `*.localhost`, 127.0.0.0/8, `[::1]`) or one of
  `FACEID_ALLOWED_HOSTS` (e.g. `api`, the compose service name). 403 `host_not_allowed`.
- `Origin` / `Sec-Fetch-Site` (every server): a state-changing request (POST, PUT, PATCH, DELETE) that a
  browser marks as coming from another site (`Sec-Fetch-Site: cross-site`), or whose `Origin` is not this
  server's own (its host:port differs from the Host header, or is `null`), is refused with 403
  `cross_site_request`, unless the origin is one of `FACEID_CORS_ORIGINS`. A form post needs no CORS
  preflight, so without this a page could enroll, report or delete on a keyless server. Clients that are
  not browsers (the `faceid` command, the Python client, curl) send neither header and are not affected.
  A read that another site's page embeds (`Sec-Fetch-Mode: no-cors` with `Sec-Fetch-Site: cross-site` or
  `same-site`: an <img>, a <script>; no CORS check applies and no Origin is sent) is refused the same way:
  whether a face crop loads tells that page what the gallery and the recent identifications hold. A link
  to the server (a navigation) and CORS requests (`FACEID_CORS_ORIGINS`) are not affected.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from app.core.errors import error_response

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
EMBEDDING_SITES = frozenset({"cross-site", "same-site"})  # same-site: e.g. another port of localhost


def host_name(host_header: str) -> str:
    """The name of a Host header value without its port, lower case (`[::1]:8000` -> `::1`)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_host(name: str) -> bool:
    """`localhost`, a `.localhost` name (RFC 6761: always loopback), or a loopback IP address."""
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


class BrowserGuardMiddleware:
    """The two rules above. `check_host`: the Host rule (keyless servers); `allowed_hosts`: extra names
    (exact, case-insensitive, without port); `trusted_origins`: origins allowed to write cross-site."""

    def __init__(self, app, check_host: bool, allowed_hosts: list[str], trusted_origins: list[str]):
        self.app = app
        self.check_host = check_host
        self.allowed_hosts = {h.strip().lower().strip("[]") for h in allowed_hosts}
        self.trusted_origins = {o.rstrip("/").lower() for o in trusted_origins}

    def _refusal(self, scope) -> tuple[str, str] | None:
        host = _header(scope, b"host") or ""
        if self.check_host:
            name = host_name(host)
            if not (is_loopback_host(name) or name in self.allowed_hosts):
                return "host_not_allowed", (f"this server has no API keys and answers only to a loopback host "
                                            f"name, not {host[:100]!r} (a DNS-rebinding page uses its own name); "
                                            "add the name to FACEID_ALLOWED_HOSTS if it is yours")
        if scope["method"] not in STATE_CHANGING:
            if ((_header(scope, b"sec-fetch-mode") or "").lower() == "no-cors"
                    and (_header(scope, b"sec-fetch-site") or "").lower() in EMBEDDING_SITES):
                return "cross_site_request", (f"{scope['method']} embedded in another site's page (an <img> or a "
                                              "<script>) is refused; read from this server's own pages, through "
                                              "CORS (FACEID_CORS_ORIGINS) or from a client that is not a browser")
            return None
        origin = _header(scope, b"origin")
        if origin is not None and origin.rstrip("/").lower() in self.trusted_origins:
            return None
        cross = (_header(scope, b"sec-fetch-site") or "").lower() == "cross-site"
        if origin is not None and not cross:
            netloc = urlsplit(origin.strip()).netloc.lower() if origin.strip() != "null" else ""
            cross = not netloc or netloc != host.strip().lower()
        if cross:
            return "cross_site_request", (f"{scope['method']} from another site's page (Origin {(origin or '-')[:100]!r})"
                                          " is refused; send requests from this server's own pages or from a "
                                          "client that is not a browser, or list the origin in FACEID_CORS_ORIGINS")
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            refused = self._refusal(scope)
            if refused:
                return await error_response(403, *refused)(scope, receive, send)
        await self.app(scope, receive, send)
