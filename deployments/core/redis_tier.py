"""Results kept in Redis too, so they outlive the Ray cluster; Redis failing is never an outage.

Each ingress replica holds one of these (one connection pool). A call that fails to reach Redis
(down, slow past `timeout_s`, refusing the password) is answered "not there" and starts an
*episode*: logged once, counted, and Redis is left alone for `retry_s` before one call tries
again; the first call that succeeds ends it (logged once). A refusal of one command (a value
over `maxmemory`, say) is counted but is no outage.

A stored value is the `X-Crop` line, a newline, then the encoded picture. The key prefix carries
the format's version, so a new format never reads old entries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis import asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from .imaging import Cut
from .results import Picture, parse_faces
from .settings import Settings

log = logging.getLogger("ray.serve")

T = TypeVar("T")

# Every count `stats` reports, zero until it happens: a reader never meets a missing key.
COUNTED = (
    "hits",
    "misses",
    "unreadable",
    "writes",
    "too_large",
    "refused",
    "skipped",
    "unavailable",
    "episodes",
)


class RedisTier:
    """get/put of pictures under `prefix`; every failure means "without Redis"."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl_s: float | None,
        timeout_s: float,
        max_value_bytes: int,
        retry_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_unavailable: Callable[[], None] = lambda: None,
    ) -> None:
        self.client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=64,
            retry_on_error=[],  # one try: a failed call is answered "without Redis"
        )
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.max_value_bytes = max_value_bytes
        self.retry_s = retry_s
        self.clock = clock
        self.on_unavailable = on_unavailable  # the ingress counts it in its metrics too
        self.counters: Counter[str] = Counter()
        self.down = False  # in an episode
        self._retry_at = 0.0

    @classmethod
    def for_settings(
        cls, settings: Settings, url: str, *, on_unavailable: Callable[[], None] = lambda: None
    ) -> RedisTier:
        """The tier at `url` as `settings` configure the service's: prefix, TTL, limits."""
        return cls(
            url,
            prefix=settings.cache_redis_prefix,
            ttl_s=settings.cache_ttl_s,
            timeout_s=settings.cache_redis_timeout_s,
            max_value_bytes=settings.cache_redis_max_value_bytes,
            on_unavailable=on_unavailable,
        )

    async def get(self, key: str) -> Picture | None:
        try:
            stored = await self._call("get", lambda: self.client.get(self.prefix + key))
        except _NotAnswered:
            return None
        if stored is None:
            self.counters["misses"] += 1
            return None
        picture = decode(stored) if isinstance(stored, bytes) else None
        self.counters["hits" if picture else "unreadable"] += 1
        return picture

    async def put(self, key: str, picture: Picture) -> None:
        expiry = None if self.ttl_s is None else max(1, round(self.ttl_s))
        value = encode(picture)
        if len(value) > self.max_value_bytes:
            # Not even sent: a value near Redis's maxmemory is refused, and its bytes linger in
            # the connection's buffer, refusing the writes after it too.
            self.counters["too_large"] += 1
            return
        try:
            await self._call("set", lambda: self.client.set(self.prefix + key, value, ex=expiry))
        except _NotAnswered:
            return
        self.counters["writes"] += 1

    async def put_bytes(self, name: str, value: bytes, *, ttl_s: int) -> bool:
        """Keep `value` under `name` (not a result: a queued job's upload); whether it was."""
        try:
            await self._call("set", lambda: self.client.set(self.prefix + name, value, ex=ttl_s))
        except _NotAnswered:
            return False
        return True

    async def get_bytes(self, name: str) -> bytes | None:
        try:
            value = await self._call("get", lambda: self.client.get(self.prefix + name))
        except _NotAnswered:
            return None
        return value if isinstance(value, bytes) else None

    def stats(self) -> dict[str, Any]:
        return {"available": not self.down, **{name: self.counters[name] for name in COUNTED}}

    async def close(self) -> None:
        await self.client.aclose()

    async def _call(self, name: str, command: Callable[[], Awaitable[T]]) -> T:
        """`command`'s answer; `_NotAnswered` when Redis is down or refuses it."""
        if self.down and self.clock() < self._retry_at:
            self.counters["skipped"] += 1
            self.on_unavailable()
            raise _NotAnswered
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await command()
        except ResponseError as exc:  # this command refused: Redis itself is fine
            self.counters["refused"] += 1
            log.warning("redis refused %s: %s", name, exc)
            raise _NotAnswered from exc
        except (RedisError, OSError, TimeoutError) as exc:  # unreachable, slow, or the password
            self._failed(exc)
            raise _NotAnswered from exc
        if self.down:
            self.down = False
            log.warning("redis cache reachable again; using it")
        return answer

    def _failed(self, exc: Exception) -> None:
        self.counters["unavailable"] += 1
        self.on_unavailable()
        self._retry_at = self.clock() + self.retry_s
        if not self.down:
            self.down = True
            self.counters["episodes"] += 1
            log.warning(
                "redis cache unavailable (%s: %s); serving without it, trying again every %g s",
                type(exc).__name__,
                exc,
                self.retry_s,
            )


def encode(picture: Picture) -> bytes:
    """The picture's headers on a first line (`X-Crop`, then a tab and `X-Faces` if it has
    one), then its bytes."""
    head = picture.cut.header()
    if (faces := picture.faces_header()) is not None:
        head += "\t" + faces
    return head.encode() + b"\n" + picture.body


def decode(stored: bytes) -> Picture | None:
    """The picture, or None for a value this version cannot read."""
    line, _, body = stored.partition(b"\n")
    try:
        crop, *faces = line.decode().split("\t")
        return Picture(body, Cut.parse(crop), parse_faces(faces[0]) if faces else None)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None


class _NotAnswered(Exception):
    """Redis was skipped, unreachable, or refused the command."""
