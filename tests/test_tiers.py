"""The walk through the tiers in-process: the real `Coalescer` as the cluster cache (with a
switch that makes it down), the real `Scheduler`'s tickets as the line, a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from deployments.core.background import Background
from deployments.core.coalescer import Coalescer, Lookup, Released, Settled
from deployments.core.errors import AnimeGANError, InvalidImage, Overloaded
from deployments.core.faces import Box
from deployments.core.imaging import Cut
from deployments.core.redis_tier import RedisTier
from deployments.core.result_store import ResultStore
from deployments.core.results import Picture
from deployments.core.scheduler import Scheduler
from deployments.core.shed_hold import ShedHold
from deployments.core.tiers import Tiers, Turn
from tests.redis_server import RedisServer

T = TypeVar("T")
PICTURE = Picture(b"picture", Cut("none", Box(0, 0, 8, 8)))


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 20))


class LocalCache:
    """The real `Coalescer` as the cluster cache; while `down`, answered as its client answers
    for an actor that does not answer."""

    def __init__(self) -> None:
        self.coalescer = Coalescer(ResultStore(100_000), claim_timeout_s=10)
        self.down = False
        self.calls: Counter[str] = Counter()

    async def get_or_claim(self, key: str) -> Lookup | None:
        self.calls["get_or_claim"] += 1
        return None if self.down else self.coalescer.get_or_claim(key)

    async def get(self, key: str) -> Picture | None:
        self.calls["get"] += 1
        return None if self.down else self.coalescer.store.get(key)

    async def wait(self, key: str) -> Settled:
        return Released() if self.down else await self.coalescer.wait(key)

    async def put(self, key: str, picture: Picture) -> None:
        if not self.down:
            self.coalescer.put(key, picture)

    async def fail(self, key: str, error: AnimeGANError) -> None:
        if not self.down:
            self.coalescer.fail(key, error)

    async def release(self, key: str) -> None:
        if not self.down:
            self.coalescer.release(key)


class LocalLine:
    """The real `Scheduler`'s tickets as the line (two slots), and the ingress's shed hold."""

    def __init__(self) -> None:
        self.scheduler = Scheduler(max_queued=100, max_per_client=100, ttl_s=60)
        self.scheduler.set_capacity(2)
        self.hold = ShedHold()
        self.asked = 0

    def refuse_if_busy(self) -> None:
        self.hold.check()

    @contextlib.asynccontextmanager
    async def turn(
        self, client: str, key: str, work: float, *, patient: bool = False
    ) -> AsyncIterator[Turn]:
        self.asked += 1
        ticket = f"ticket{self.asked}"
        max_wait_s = math.inf if patient else 30
        retry_after_s = await self.scheduler.acquire(
            ticket, "w", client, key, max_wait_s=max_wait_s, work=work
        )
        if retry_after_s is not None:
            refusal = Overloaded("the line is full", retry_after_s=retry_after_s)
            self.hold.start(refusal)
            raise refusal
        turn = Turn()
        try:
            yield turn
        finally:
            key_done = key if turn.computed else None
            self.scheduler.release(ticket, key=key_done, computed=turn.computed)


class Model:
    """`compute` for the walk: counts its runs; each waits for `gate` if set, then raises
    `error` if set."""

    def __init__(self) -> None:
        self.runs = 0
        self.gate: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.started = asyncio.Semaphore(0)  # released once a run

    async def compute(self) -> Picture:
        self.runs += 1
        self.started.release()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            error, self.error = self.error, None  # the next run succeeds
            raise error
        return PICTURE


class Walk:
    """A `Tiers` over local parts, and what each of them saw."""

    def __init__(self, redis: RedisTier | None = None) -> None:
        self.cache = LocalCache()
        self.line = LocalLine()
        self.model = Model()
        self.redis = redis
        self.tiers = Tiers(
            hot=ResultStore(100_000),
            cluster=self.cache,
            redis=redis,
            line=self.line,
            background=Background(),
        )

    async def answer(self, key: str = "k", client: str | None = "alice") -> tuple[Picture, str]:
        return await self.tiers.answer(key, self.model.compute, client)

    async def settled(self) -> None:
        """Until the background copies and settlements are done."""
        await self.tiers.background.drain()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


@contextlib.asynccontextmanager
async def redis_tier(server: RedisServer) -> AsyncIterator[RedisTier]:
    tier = RedisTier(server.url(), prefix="tiers:", ttl_s=None, timeout_s=1, max_value_bytes=1000)
    try:
        yield tier
    finally:
        await tier.close()


def test_a_hot_hit_asks_no_other_tier_and_takes_no_turn() -> None:
    async def scenario() -> None:
        walk = Walk()
        walk.tiers.hot.put("k", PICTURE)
        assert await walk.answer() == (PICTURE, "hit")
        assert (walk.cache.calls.total(), walk.line.asked, walk.model.runs) == (0, 0, 0)
        assert walk.tiers.outcomes == {"hot_hits": 1}

    run(scenario)


def test_a_cluster_hit_is_copied_into_the_hot_cache() -> None:
    async def scenario() -> None:
        walk = Walk()
        walk.cache.coalescer.put("k", PICTURE)
        assert await walk.answer() == (PICTURE, "hit")
        assert walk.tiers.hot.get("k") == PICTURE and walk.model.runs == 0

    run(scenario)


def test_a_miss_is_computed_in_a_turn_and_kept_in_every_tier(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with redis_tier(redis_server) as redis:
            walk = Walk(redis)
            assert await walk.answer() == (PICTURE, "miss")
            await walk.settled()
            assert walk.model.runs == 1 and walk.line.asked == 1
            assert walk.line.scheduler.stats()["running"] == 0  # the slot was freed
            assert walk.tiers.hot.get("k") == PICTURE
            assert walk.cache.coalescer.store.get("k") == PICTURE
            assert await redis.get("k") == PICTURE

    run(scenario)


def test_identical_requests_in_flight_are_computed_once() -> None:
    async def scenario() -> None:
        walk = Walk()
        walk.model.gate = asyncio.Event()
        first = asyncio.create_task(walk.answer())
        await walk.model.started.acquire()
        second = asyncio.create_task(walk.answer(client="bob"))
        await asyncio.sleep(0.01)  # bob finds alice's claim and waits on it
        walk.model.gate.set()
        assert await first == (PICTURE, "miss")
        assert await second == (PICTURE, "shared")
        assert walk.model.runs == 1 and walk.line.asked == 1

    run(scenario)


def test_a_refused_input_is_the_refusal_of_every_request_waiting_for_it() -> None:
    async def scenario() -> None:
        walk = Walk()
        walk.model.gate = asyncio.Event()
        walk.model.error = InvalidImage("the picture is broken")
        first = asyncio.create_task(walk.answer())
        await walk.model.started.acquire()
        second = asyncio.create_task(walk.answer(client="bob"))
        await asyncio.sleep(0.01)
        walk.model.gate.set()
        for waiting in (first, second):
            with pytest.raises(InvalidImage, match="broken"):
                await waiting
        assert walk.model.runs == 1  # the waiter was not computed again
        assert walk.tiers.hot.get("k") is None

    run(scenario)


@pytest.mark.parametrize("failure", ["cancelled", "overloaded", "fault"])
def test_a_claimant_that_gives_up_leaves_its_waiters_to_compute_for_themselves(
    failure: str,
) -> None:
    async def scenario() -> None:
        walk = Walk()
        walk.model.gate = asyncio.Event()
        if failure == "overloaded":
            walk.model.error = Overloaded("the model replicas are at capacity")
        elif failure == "fault":
            walk.model.error = RuntimeError("a replica died")
        first = asyncio.create_task(walk.answer())
        await walk.model.started.acquire()
        second = asyncio.create_task(walk.answer(client="bob"))
        await asyncio.sleep(0.01)
        if failure == "cancelled":
            first.cancel()
        walk.model.gate.set()
        with pytest.raises((asyncio.CancelledError, Overloaded, RuntimeError)):
            await first
        assert await second == (PICTURE, "miss")  # computed for itself, not shared
        await walk.settled()
        assert walk.model.runs == 2
        assert walk.line.scheduler.stats()["running"] == 0  # both slots were freed
        assert walk.cache.coalescer.stats()["in_flight"] == 0

    run(scenario)


def test_a_redis_hit_is_copied_into_the_tiers_above_it(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with redis_tier(redis_server) as redis:
            await redis.put("k", PICTURE)
            walk = Walk(redis)
            assert await walk.answer() == (PICTURE, "hit")
            await walk.settled()
            assert walk.model.runs == 0 and walk.line.asked == 0
            assert walk.tiers.hot.get("k") == PICTURE
            # In the cluster cache too, which settled the claim: nothing is left in flight.
            assert walk.cache.coalescer.store.get("k") == PICTURE
            assert walk.cache.coalescer.stats()["in_flight"] == 0
            assert walk.tiers.outcomes == {"redis_hits": 1}

    run(scenario)


def test_with_the_cluster_cache_down_each_request_is_computed_and_none_fails() -> None:
    async def scenario() -> None:
        walk = Walk()
        walk.cache.down = True
        walk.model.gate = asyncio.Event()
        both = asyncio.gather(walk.answer(), walk.answer(client="bob"))
        for _ in range(2):  # no claim to find: both are computing
            await walk.model.started.acquire()
        walk.model.gate.set()
        assert await both == [(PICTURE, "miss"), (PICTURE, "miss")]
        assert await walk.answer(client="carol") == (PICTURE, "hit")  # this replica kept it

    run(scenario)


def test_after_the_line_refuses_a_miss_the_next_are_refused_here_and_hits_still_served() -> None:
    async def scenario() -> None:
        walk = Walk()
        walk.line.scheduler.max_queued = 0  # the line refuses every ticket
        with pytest.raises(Overloaded, match="the line is full"):
            await walk.answer()
        with pytest.raises(Overloaded, match="the line is full") as held:
            await walk.answer("other")
        assert held.value.retry_after_s is not None
        assert (walk.line.asked, walk.line.hold.refused) == (1, 1)  # the second asked nobody
        walk.tiers.hot.put("popular", PICTURE)
        assert await walk.answer("popular") == (PICTURE, "hit")
        await walk.settled()
        assert walk.cache.coalescer.stats()["in_flight"] == 0  # the refused claim was released
        # A job holds its slot already: neither the hold nor the line applies to it.
        assert await walk.answer(client=None) == (PICTURE, "miss")
        assert walk.line.asked == 1

    run(scenario)


def test_a_lookup_copies_up_and_claims_nothing(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        async with redis_tier(redis_server) as redis:
            walk = Walk(redis)
            assert await walk.tiers.lookup("absent") is None
            walk.cache.coalescer.put("cluster", PICTURE)
            await redis.put("redis", PICTURE)
            assert await walk.tiers.lookup("cluster") == PICTURE
            assert await walk.tiers.lookup("redis") == PICTURE
            await walk.settled()
            assert walk.tiers.hot.get("cluster") == PICTURE
            assert walk.tiers.hot.get("redis") == PICTURE
            assert walk.cache.coalescer.store.get("redis") == PICTURE
            assert walk.cache.coalescer.stats()["in_flight"] == 0
            assert walk.model.runs == 0 and walk.line.asked == 0

    run(scenario)
