"""Webhooks: where they may point (`check_destination`), how each delivery is signed (`sign`, Stripe's scheme) and
sent (`WebhookSender`), and the subscription edits behind /webhooks.

A delivery is `POST <url>` with the event's JSON as body and
`FaceID-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, `FaceID-Event-Id` and
`FaceID-Event-Type` (and `FaceID-Event-Seq`, the outbox position, increasing per subscription except for
replayed dead letters). Receivers check the signature and refuse a `t` older than REPLAY_WINDOW_S.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
import time
from urllib.parse import urlsplit

import httpx

from app.core.errors import AppError

RECHECK_S = 30.0  # a destination's addresses are checked again after this long
REPLAY_WINDOW_S = 300  # documented: receivers refuse older signatures (docs/events.md)
SIGNATURE_HEADER = "FaceID-Signature"
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, t: int | None = None) -> str:
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, tolerance_s: int = REPLAY_WINDOW_S, now: float | None = None) -> bool:
    """What a receiver does (docs/events.md has it in ten lines)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    expected = sign(secret, body, t).split("v1=", 1)[1]
    return abs(now - t) <= tolerance_s and hmac.compare_digest(expected, parts.get("v1", ""))


def _allowed(host: str, addr: ipaddress._BaseAddress, allowed: list[str]) -> bool:
    for entry in allowed:
        if entry.lower() == host.lower():
            return True
        try:
            if addr in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_destination(url: str, allowed: list[str]) -> str | None:
    """Why events may not go to `url` (None: they may). http/https only; every address the host resolves to
    must be public, or listed in FACEID_WEBHOOK_ALLOWED_HOSTS; link-local and cloud metadata never."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "only http:// and https:// URLs with a host"
    if parts.username or parts.password:
        return "no credentials in the URL: the signature authenticates deliveries"
    host = parts.hostname
    try:
        infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"cannot resolve {host}"
    for info in infos:
        addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if getattr(addr, "ipv4_mapped", None):
            addr = addr.ipv4_mapped
        if addr in METADATA or addr.is_link_local:
            return f"{host} resolves to {addr}: link-local and cloud metadata addresses are refused"
        if not addr.is_global and not _allowed(host, addr, allowed):
            return (f"{host} resolves to {addr}, which is not public: list it in FACEID_WEBHOOK_ALLOWED_HOSTS "
                    "to allow it")
    return None


class WebhookSender:
    """Sends one signed delivery; an answer other than 2xx, a timeout or a refused destination is a failure."""

    def __init__(self, timeout_s: float, allowed_hosts: list[str]):
        self.allowed_hosts = allowed_hosts
        self._checked: dict[str, tuple[float, str | None]] = {}  # url -> (when, problem)
        self.client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False,
                                        headers={"User-Agent": "faceid-webhooks/1"})

    async def send(self, url: str, secret: str, event_id: str, type_: str, body: str,
                   seq: int | None = None) -> str | None:
        """None when delivered; else why not."""
        import asyncio

        checked = self._checked.get(url)
        if checked is None or time.monotonic() - checked[0] > RECHECK_S:  # DNS may have changed
            checked = self._checked[url] = (time.monotonic(),
                                            await asyncio.to_thread(check_destination, url, self.allowed_hosts))
        problem = checked[1]
        if problem:
            return f"refused: {problem}"
        data = body.encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, data),
                   "FaceID-Event-Id": event_id, "FaceID-Event-Type": type_}
        if seq is not None:  # the outbox position: increasing per subscription (a replayed dead letter has none)
            headers["FaceID-Event-Seq"] = str(seq)
        try:
            r = await self.client.post(url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:300]
        return None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"

    async def aclose(self) -> None:
        await self.client.aclose()


def validate_subscription(url: str, events: list[str], known: set[str], allowed: list[str]) -> None:
    problem = check_destination(url, allowed)
    if problem:
        raise AppError(422, "webhook_destination_refused", problem)
    unknown = sorted(set(events) - known - {"*"})
    if unknown:
        raise AppError(422, "unknown_event_type", f"unknown event types {unknown}; known: {sorted(known)}")
