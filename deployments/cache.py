"""The cluster-wide cache: named actors around the core's `Coalescer`, and the client to them.

The client is the ingress's `ClusterCache` (core/tiers.py). It keeps every call short, and any
failure of the actor (restarting, unreachable, too slow) means "go on without the cache": the
answer is computed and the failure counted, never passed on to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import ray

from . import telemetry
from .actors import ActorDown, ask, named_actor
from .core.coalescer import Coalescer, Lookup, Released, Settled
from .core.errors import AnimeGANError
from .core.result_store import ResultStore, StoreCounters
from .core.results import Picture
from .core.shard_ring import ShardRing

log = logging.getLogger("ray.serve")

CACHE_ACTOR_NAME = "animegan-cache"
REPUBLISH_S = 10.0
PUBLISH_EVERY_S = 1.0


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class CacheActor:
    """A thin actor around `Coalescer`, plus the cache-size metric."""

    def __init__(self, max_bytes: int, ttl_s: float | None, claim_timeout_s: float) -> None:
        self.cache = Coalescer(ResultStore(max_bytes, ttl_s=ttl_s), claim_timeout_s=claim_timeout_s)
        self.metrics = {m.name: m.make(replica=False) for m in telemetry.CACHE_METRICS}
        self._published = StoreCounters()
        self._published_at = 0.0
        self._keeping: asyncio.Task[None] | None = None

    async def get_or_claim(self, key: str) -> Lookup:
        if self._keeping is None:  # the actor's event loop runs once a call arrives
            self._keeping = asyncio.create_task(self._keep_published())
        found = self.cache.get_or_claim(key)
        self._publish()
        return found

    def get(self, key: str) -> Picture | None:
        found = self.cache.store.get(key)
        self._publish()
        return found

    async def wait(self, key: str) -> Settled:
        return await self.cache.wait(key)

    def put(self, key: str, picture: Picture) -> None:
        self.cache.put(key, picture)
        self._publish()

    def fail(self, key: str, error: AnimeGANError) -> None:
        self.cache.fail(key, error)

    def release(self, key: str) -> None:
        self.cache.release(key)

    def stats(self) -> dict[str, Any]:
        return self.cache.stats()

    async def _keep_published(self) -> None:
        """Ray stops exporting a gauge not set for about half a minute: set them again."""
        while True:
            await asyncio.sleep(REPUBLISH_S)
            self._publish(force=True)

    def _publish(self, *, force: bool = False) -> None:
        """The store's counters into the metrics (counters by what changed since last time),
        at most once a second: four metric calls on every lookup cost the actor ~10% more CPU
        per call (make bench), and Ray sends metrics on only every second or more anyway."""
        clock = time.monotonic()
        if not force and clock - self._published_at < PUBLISH_EVERY_S:
            return
        self._published_at = clock
        now, then = self.cache.store.counters, self._published
        self.metrics[telemetry.CACHE_ENTRIES.name].set(now.entries)
        self.metrics[telemetry.CACHE_BYTES.name].set(now.bytes)
        lookups = self.metrics[telemetry.CACHE_LOOKUPS.name]
        if now.hits > then.hits:
            lookups.inc(now.hits - then.hits, tags={"result": "hit"})
        if now.misses > then.misses:
            lookups.inc(now.misses - then.misses, tags={"result": "miss"})
        if now.evictions > then.evictions:
            self.metrics[telemetry.CACHE_EVICTIONS.name].inc(now.evictions - then.evictions)
        self._published = replace(now)


class CacheClient:
    """The ingress's side of the cache actors: short timeouts, and failures mean "without it".

    With `shards` > 1 the keys are spread over that many actors by consistent hashing
    (`ShardRing`), each holding its share of `max_bytes`.
    """

    def __init__(
        self,
        *,
        shards: int,
        max_bytes: int,
        ttl_s: float | None,
        claim_timeout_s: float,
        call_timeout_s: float,
        on_unavailable: Callable[[], None] = lambda: None,
    ) -> None:
        self._actor_args = (max_bytes // shards, ttl_s, claim_timeout_s)
        self.on_unavailable = on_unavailable
        self.ring = ShardRing(shards)
        self.actors = [self._found(shard) for shard in range(shards)]
        self.call_timeout_s = call_timeout_s
        self.claim_timeout_s = claim_timeout_s
        self.unavailable = 0  # calls that failed or timed out: served without the cache

    async def get_or_claim(self, key: str) -> Lookup | None:
        """The cache's answer for `key` (see `Coalescer.get_or_claim`); None if it is down."""
        try:
            found: Lookup = await self._call(key, "get_or_claim", self.call_timeout_s, key)
        except ActorDown:
            return None
        return found

    async def get(self, key: str) -> Picture | None:
        """The stored result for `key`, claiming nothing; None if absent or the cache is down."""
        try:
            found: Picture | None = await self._call(key, "get", self.call_timeout_s, key)
        except ActorDown:
            return None
        return found

    async def wait(self, key: str) -> Settled:
        """How the claim on `key` was settled; `Released` if the cache failed us meanwhile."""
        try:
            settled: Settled = await self._call(key, "wait", self.claim_timeout_s, key)
        except ActorDown:
            return Released()
        return settled

    async def put(self, key: str, picture: Picture) -> None:
        await self._quietly(key, "put", key, picture)

    async def fail(self, key: str, error: AnimeGANError) -> None:
        await self._quietly(key, "fail", key, error)

    async def release(self, key: str) -> None:
        await self._quietly(key, "release", key)

    async def stats(self) -> dict[str, Any] | None:
        """The shards' counters added up (None if every shard is down), and each shard's."""
        answers = await asyncio.gather(
            *(self._shard_stats(shard) for shard in range(len(self.actors)))
        )
        shards = [answer for answer in answers if answer is not None]
        if not shards:
            return None
        total: Counter[str] = Counter()
        for answer in shards:
            total.update({k: v for k, v in answer.items() if isinstance(v, int)})
        return {**total, "shards": len(self.actors), "shards_down": len(answers) - len(shards)}

    async def _shard_stats(self, shard: int) -> dict[str, Any] | None:
        try:
            stats: dict[str, Any] = await self._on(shard, "stats", self.call_timeout_s)
        except ActorDown:
            return None
        return stats

    async def _quietly(self, key: str, method: str, *args: Any) -> None:
        with contextlib.suppress(ActorDown):
            await self._call(key, method, self.call_timeout_s, *args)

    async def _call(self, key: str, method: str, timeout_s: float, *args: Any) -> Any:
        return await self._on(self.ring.shard_of(key), method, timeout_s, *args)

    async def _on(self, shard: int, method: str, timeout_s: float, *args: Any) -> Any:
        try:
            return await ask(getattr(self.actors[shard], method).remote(*args), timeout_s)
        except ActorDown as down:
            if down.died:  # restarts exhausted: a new one
                self.actors[shard] = self._found(shard)
            self.unavailable += 1
            self.on_unavailable()
            log.warning("cache actor unavailable (%s); serving without it", down)
            raise

    def _found(self, shard: int) -> ray.actor.ActorHandle:
        return named_actor(CacheActor, shard_name(shard), *self._actor_args)


def shard_name(shard: int) -> str:
    """The actor of one shard; the first keeps the name of the single actor it once was."""
    return CACHE_ACTOR_NAME if shard == 0 else f"{CACHE_ACTOR_NAME}-{shard}"
