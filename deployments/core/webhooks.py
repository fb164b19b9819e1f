"""Job webhooks: a finished job's JSON POSTed to its `callback_url`, signed as the Standard
Webhooks specification says, retried with exponential backoff for a bounded time.

A callback URL makes the service send requests where a client says: a server-side request
forgery risk. So a URL is taken only for hosts an operator listed (`webhook_allowed_hosts`),
over http or https, and is checked again when it is called: the name is resolved, every address
must be outside the link-local and metadata ranges, and the request goes to the address that
was checked (no second resolution), following no redirect.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .errors import BadParameter

log = logging.getLogger("ray.serve")

FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0
# Never called, whatever the allow-list says: link-local (cloud metadata lives there), the
# metadata addresses clouds use outside it, and addresses that name no host.
FORBIDDEN = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",
        "fe80::/10",
        "fd00:ec2::254/128",
        "100.100.100.200/32",
        "0.0.0.0/8",
        "::/128",
        "224.0.0.0/4",
        "ff00::/8",
    )
)

Resolve = Callable[[str, int], Awaitable[list[str]]]


def check_callback(url: str, allowed_hosts: list[str]) -> str:
    """`url` if the service may call it (scheme, host allowed, not a forbidden address); else
    `BadParameter`, saying why."""
    if not allowed_hosts:
        raise BadParameter(
            "callback_url is not enabled here: the operator has allowed no webhook hosts "
            "(webhook_allowed_hosts)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadParameter("callback_url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise BadParameter("callback_url must not carry a user name or password")
    host = parts.hostname.lower().rstrip(".")
    if not any(_allows(pattern.lower(), host) for pattern in allowed_hosts):
        raise BadParameter(f"callback_url's host {host!r} is not in webhook_allowed_hosts")
    if _forbidden(host):
        raise BadParameter("callback_url must not be a link-local or metadata address")
    return url


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value: v1, then the base64 HMAC-SHA256 of
    "id.timestamp.body" under the secret's bytes (the base64 after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class Webhooks:
    """Deliveries in the background: `send` returns at once; outcomes are counted."""

    def __init__(
        self,
        *,
        secret: str | None,
        allowed_hosts: list[str],
        timeout_s: float,
        retry_for_s: float,
        resolve: Resolve = resolve,
        delivered: Callable[[str], None] = lambda job_id: None,
        counted: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.secret = secret
        self.allowed_hosts = allowed_hosts
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self.resolve = resolve
        self.delivered = delivered  # the line marks the job notified (not sent again)
        self.counted = counted  # into the metrics
        self.outcomes: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, job_id: str, url: str, payload: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(job_id, url, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, job_id: str, url: str, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, separators=(",", ":")).encode()
        message_id = f"msg_{job_id}"  # the same for every try: receivers drop repeats
        give_up_at = time.monotonic() + self.retry_for_s
        wait_s = FIRST_RETRY_S
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                outcome = await self._try(client, url, message_id, body)
                if outcome in ("delivered", "refused") or time.monotonic() + wait_s > give_up_at:
                    break
                self._count("retried")
                await asyncio.sleep(wait_s)
                wait_s = min(MAX_RETRY_S, wait_s * 2)
        self._count(outcome if outcome != "error" else "failed")
        self.delivered(job_id)

    async def _try(self, client: httpx.AsyncClient, url: str, message_id: str, body: bytes) -> str:
        """One delivery: `delivered`, `refused` (a forbidden address: never retried) or
        `error`."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            check_callback(url, self.allowed_hosts)  # the list may have changed since
            addresses = await self.resolve(host, port)
        except BadParameter as refusal:
            log.warning("webhook to %s refused: %s", host, refusal.message)
            return "refused"
        except OSError as exc:
            log.warning("webhook host %s did not resolve: %s", host, exc)
            return "error"
        if not addresses or any(_forbidden(a) for a in addresses):
            log.warning("webhook to %s refused: it resolves to a forbidden address", host)
            return "refused"
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "host": parts.netloc.rpartition("@")[2],
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
        }
        if self.secret is not None:
            headers["webhook-signature"] = sign(self.secret, message_id, timestamp, body)
        pinned = _with_address(parts, addresses[0], port)
        try:
            answer = await client.post(
                pinned, content=body, headers=headers, extensions={"sni_hostname": host}
            )
        except httpx.HTTPError as exc:
            log.warning("webhook to %s failed: %s: %s", host, type(exc).__name__, exc)
            return "error"
        return "delivered" if answer.is_success else "error"

    def _count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1
        self.counted(outcome)


def _allows(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def _forbidden(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: checked once resolved
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in FORBIDDEN)


def _with_address(parts: Any, address: str, port: int) -> str:
    """The URL with its host replaced by the checked `address`."""
    host = f"[{address}]" if ":" in address else address
    return str(urlunsplit((parts.scheme, f"{host}:{port}", parts.path or "/", parts.query, "")))
