"""The walk through the cache tiers, top to bottom, and what a miss does at the bottom.

    hot cache (this replica)  ->  cluster cache (claims: identical requests computed once)
    ->  Redis (optional)  ->  a turn in the line, then the model  ->  kept in every tier

One copy-up rule for every path: a result found in a tier is copied into each tier above it.
The claim a miss takes on the cluster cache is settled exactly once: a result by being copied
up into the cluster cache (every waiter gets it); otherwise by `Tiers._claim`, where a refusal
of the input is handed to the key's waiters (`fail`), and `Overloaded`, a fault or a
cancellation is about this request alone (`release`: the waiters compute for themselves).

Plain asyncio, written against the small protocols below: the ingress wires the cache actors'
and the line actor's clients in; the tests wire the real `Coalescer` and `Scheduler`.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from .background import Background
from .coalescer import Claimed, Failed, Hit, Lookup, Pending, Settled
from .errors import AnimeGANError, Overloaded
from .fair_queue import QUANTUM
from .result_store import ResultStore
from .results import CacheOutcome, Picture


class ClusterCache(Protocol):
    """The cluster-wide cache with its claims (`Coalescer`'s calls); None, `Released` or
    nothing when it is down: the walk goes on without it."""

    async def get_or_claim(self, key: str) -> Lookup | None: ...

    async def get(self, key: str) -> Picture | None: ...

    async def wait(self, key: str) -> Settled: ...

    async def put(self, key: str, picture: Picture) -> None: ...

    async def fail(self, key: str, error: AnimeGANError) -> None: ...

    async def release(self, key: str) -> None: ...


class Store(Protocol):
    """A tier below the cluster cache (Redis): "not there" whenever it fails."""

    async def get(self, key: str) -> Picture | None: ...

    async def put(self, key: str, picture: Picture) -> None: ...


@dataclass
class Turn:
    """A request's slot in the line; set `computed` once the model ran for it."""

    computed: bool = False


class Line(Protocol):
    """The line for the model's slots, as the walk needs it."""

    def refuse_if_busy(self) -> None:
        """Raise `Overloaded` at once while the line has just refused a request."""

    def turn(
        self, client: str, key: str, work: float, *, patient: bool = False
    ) -> AbstractAsyncContextManager[Turn]:
        """Wait for a slot (raises `Overloaded` if the wait would be too long, or for a
        `patient` turn only if the line is full); free it after."""


class Tier(IntEnum):
    """Where a result was found, top to bottom."""

    HOT = 0
    CLUSTER = 1
    REDIS = 2
    MODEL = 3


Compute = Callable[[], Awaitable[Picture]]


class Tiers:
    """One ingress replica's walk: its hot cache, then the cluster's, Redis, the line."""

    def __init__(
        self,
        *,
        hot: ResultStore[Picture],
        cluster: ClusterCache,
        redis: Store | None,
        line: Line,
        background: Background,
    ) -> None:
        self.hot = hot
        self.cluster = cluster
        self.redis = redis
        self.line = line
        self.background = background
        # hot_hits, hits (cluster), shared, redis_hits, misses: answers of this replica
        self.outcomes: Counter[str] = Counter()

    async def answer(
        self,
        key: str,
        compute: Compute,
        client: str | None,
        weigh: Callable[[], float] = lambda: QUANTUM,
    ) -> tuple[Picture, CacheOutcome]:
        """The result for `key` and how it was had: stored in a tier (`hit`), computed for an
        identical request in flight (`shared`), or computed by `compute` in a turn in the
        line (`miss`) for `client` (None for a job: it holds its slot already), its turn
        weighed in megapixels by `weigh` (asked only then: a hit needs no weight)."""
        picture = self.hot.get(key)
        if picture is not None:
            return self._counted(picture, "hit", "hot_hits")
        if client is not None:
            # A refusal then costs no call to an actor; hits are still served, from this
            # replica's hot cache (where a busy service's popular pictures are).
            self.line.refuse_if_busy()
        found = await self.cluster.get_or_claim(key)  # None: the cache is down
        if isinstance(found, Hit):
            return self._found(key, found.picture, Tier.CLUSTER, "hit", "hits")
        if isinstance(found, Pending):
            settled = await self.cluster.wait(key)
            if isinstance(settled, Failed):
                raise settled.error
            if isinstance(settled, Hit):
                return self._found(key, settled.picture, Tier.CLUSTER, "shared", "shared")
        # The claim is this request's, or the cache is down, or the claimant gave up.
        async with self._claim(key, claimed=isinstance(found, Claimed)):
            stored = await self.redis.get(key) if self.redis is not None else None
            if stored is not None:
                return self._found(key, stored, Tier.REDIS, "hit", "redis_hits")
            async with self._turn(client, key, weigh) as turn:
                picture = await compute()
                turn.computed = True
            return self._found(key, picture, Tier.MODEL, "miss", "misses")

    async def lookup(self, key: str) -> Picture | None:
        """A stored result, claiming nothing and computing nothing (`/v1/results`, jobs)."""
        picture = self.hot.get(key)
        if picture is None:
            picture = await self.cluster.get(key)
            if picture is not None:
                self._copy_up(key, picture, Tier.CLUSTER)
        if picture is None and self.redis is not None:
            picture = await self.redis.get(key)
            if picture is not None:
                self._copy_up(key, picture, Tier.REDIS)
        return picture

    def _found(
        self, key: str, picture: Picture, tier: Tier, outcome: CacheOutcome, counter: str
    ) -> tuple[Picture, CacheOutcome]:
        self._copy_up(key, picture, tier)
        return self._counted(picture, outcome, counter)

    def _copy_up(self, key: str, picture: Picture, tier: Tier) -> None:
        """Keep `picture` in every tier above `tier`. The request waits for none of the
        copies but the hot cache's; putting it in the cluster cache wakes the key's waiters."""
        self.hot.put(key, picture)
        if tier > Tier.CLUSTER:
            self.background.spawn(self.cluster.put(key, picture))
        if tier > Tier.REDIS and self.redis is not None:
            self.background.spawn(self.redis.put(key, picture))

    def _counted(
        self, picture: Picture, outcome: CacheOutcome, counter: str
    ) -> tuple[Picture, CacheOutcome]:
        self.outcomes[counter] += 1
        return picture, outcome

    @contextlib.asynccontextmanager
    async def _claim(self, key: str, *, claimed: bool) -> AsyncIterator[None]:
        """Settle this request's claim on `key` for its waiters if the body does not."""
        if not claimed:
            yield
            return
        try:
            yield
        except Overloaded:  # about the service, not the input: waiters try for themselves
            self.background.spawn(self.cluster.release(key))
            raise
        except AnimeGANError as error:  # a refusal of this input: the same for its waiters
            self.background.spawn(self.cluster.fail(key, error))
            raise
        except BaseException:  # a fault or a cancellation: waiters try for themselves
            self.background.spawn(self.cluster.release(key))
            raise

    def _turn(
        self, client: str | None, key: str, weigh: Callable[[], float]
    ) -> AbstractAsyncContextManager[Turn]:
        if client is None:
            return contextlib.nullcontext(Turn())
        return self.line.turn(client, key, weigh())
