"""The cache's coalescing logic in-process with asyncio: no Ray, no actor."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from deployments.core.coalescer import Claimed, Coalescer, Failed, Hit, Pending, Released
from deployments.core.errors import InvalidImage
from deployments.core.faces import Box
from deployments.core.imaging import Cut
from deployments.core.result_store import ResultStore
from deployments.core.results import Picture

T = TypeVar("T")
PICTURE = Picture(b"picture", Cut("none", Box(0, 0, 8, 8)))


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 5))


def coalescer(
    *,
    max_bytes: int = 1000,
    ttl_s: float | None = None,
    claim_timeout_s: float = 5,
    clock: Callable[[], float] | None = None,
) -> Coalescer:
    store: ResultStore[Picture] = ResultStore(
        max_bytes, ttl_s=ttl_s, **({"clock": clock} if clock else {})
    )
    return Coalescer(store, claim_timeout_s=claim_timeout_s)


def test_the_first_caller_claims_the_rest_wait_and_a_put_makes_a_hit() -> None:
    async def scenario() -> None:
        cache = coalescer()
        assert cache.get_or_claim("k") == Claimed()
        assert cache.get_or_claim("k") == Pending()
        cache.put("k", PICTURE)
        assert cache.get_or_claim("k") == Hit(PICTURE)
        assert cache.stats()["in_flight"] == 0

    run(scenario)


def test_every_waiter_gets_the_claimants_result() -> None:
    async def scenario() -> None:
        cache = coalescer()
        assert cache.get_or_claim("k") == Claimed()
        waiters = [asyncio.create_task(cache.wait("k")) for _ in range(5)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        cache.put("k", PICTURE)
        assert await asyncio.gather(*waiters) == [Hit(PICTURE)] * 5
        assert cache.stats()["shared"] == 5

    run(scenario)


def test_a_claimants_refusal_reaches_every_waiter_and_nothing_is_stored() -> None:
    async def scenario() -> None:
        cache = coalescer()
        cache.get_or_claim("k")
        waiters = [asyncio.create_task(cache.wait("k")) for _ in range(3)]
        await asyncio.sleep(0)
        refusal = InvalidImage("broken")
        cache.fail("k", refusal)
        assert await asyncio.gather(*waiters) == [Failed(refusal)] * 3
        assert cache.stats()["failures_shared"] == 1
        assert cache.get_or_claim("k") == Claimed()  # the next request tries afresh

    run(scenario)


def test_a_released_claim_sends_its_waiters_to_compute_for_themselves() -> None:
    async def scenario() -> None:
        cache = coalescer()
        cache.get_or_claim("k")
        waiter = asyncio.create_task(cache.wait("k"))
        await asyncio.sleep(0)
        cache.release("k")
        assert await waiter == Released()

    run(scenario)


def test_a_vanished_claimant_expires_so_nobody_waits_forever() -> None:
    async def scenario() -> None:
        cache = coalescer(claim_timeout_s=0.05)
        cache.get_or_claim("k")
        assert await cache.wait("k") == Released()
        assert cache.stats()["claims_abandoned"] == 1
        assert cache.get_or_claim("k") == Claimed()

    run(scenario)


def test_an_old_claims_timer_does_not_release_a_newer_claim_on_the_same_key() -> None:
    async def scenario() -> None:
        cache = coalescer(claim_timeout_s=0.1)
        cache.get_or_claim("k")
        await asyncio.sleep(0.06)
        cache.fail("k", InvalidImage("broken"))
        assert cache.get_or_claim("k") == Claimed()
        await asyncio.sleep(0.06)  # the first claim's timer has fired by now
        assert cache.get_or_claim("k") == Pending()
        assert cache.stats()["claims_abandoned"] == 0

    run(scenario)


def test_one_waiter_giving_up_leaves_the_others_waiting() -> None:
    async def scenario() -> None:
        cache = coalescer()
        cache.get_or_claim("k")
        impatient = asyncio.create_task(cache.wait("k"))
        patient = asyncio.create_task(cache.wait("k"))
        await asyncio.sleep(0)
        impatient.cancel()
        await asyncio.sleep(0)
        cache.put("k", PICTURE)
        assert await patient == Hit(PICTURE)

    run(scenario)


def test_waiting_on_a_claim_settled_before_the_wait_finds_the_result() -> None:
    async def scenario() -> None:
        cache = coalescer()
        cache.get_or_claim("k")
        cache.put("k", PICTURE)
        assert await cache.wait("k") == Hit(PICTURE)
        assert await cache.wait("never-claimed") == Released()

    run(scenario)


def test_results_expire_after_their_time_to_live() -> None:
    async def scenario() -> None:
        now = [0.0]
        cache = coalescer(ttl_s=10, clock=lambda: now[0])
        cache.get_or_claim("k")
        cache.put("k", PICTURE)
        now[0] = 9
        assert cache.get_or_claim("k") == Hit(PICTURE)
        now[0] = 21
        assert cache.get_or_claim("k") == Claimed()

    run(scenario)


def test_the_store_evicts_the_least_recently_used_under_its_byte_bound() -> None:
    async def scenario() -> None:
        cache = coalescer(max_bytes=10)
        for key in "abc":
            cache.get_or_claim(key)
            cache.put(key, Picture(b"four", PICTURE.cut))
        stats = cache.stats()
        assert (stats["entries"], stats["bytes"], stats["evictions"]) == (2, 8, 1)
        assert cache.get_or_claim("a") == Claimed()
        assert cache.get_or_claim("c") == Hit(Picture(b"four", PICTURE.cut))

    run(scenario)
