"""The Redis tier against a real redis-server: kept, expired, kept apart, and never an outage."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from redis import Redis

from deployments.core.faces import Box
from deployments.core.imaging import Cut
from deployments.core.redis_tier import RedisTier, decode, encode
from deployments.core.results import Picture
from tests.redis_server import RedisServer

T = TypeVar("T")
PICTURE = Picture(b"\x89PNG picture bytes", Cut("face", Box(10, 20, 300, 300)))
PASSWORD = "s3cret-redis-password"


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


def tier(url: str, **options: object) -> RedisTier:
    settings: dict = {"prefix": "animegan:v1:", "ttl_s": None, "timeout_s": 0.3, "retry_s": 0.3}
    settings["max_value_bytes"] = 8 * 1024 * 1024
    return RedisTier(url, **{**settings, **options})


def test_a_picture_comes_back_with_its_crop_under_the_prefix(server: RedisServer) -> None:
    async def scenario() -> None:
        cache = tier(server.url())
        assert await cache.get("k") is None
        await cache.put("k", PICTURE)
        assert await cache.get("k") == PICTURE
        counted = {name: n for name, n in cache.stats().items() if n}
        assert counted == {"available": True, "misses": 1, "writes": 1, "hits": 1}
        await cache.close()

    run(scenario)
    assert Redis.from_url(server.url()).keys("*") == [b"animegan:v1:k"]


def test_a_picture_s_faces_come_back_with_it_and_old_values_still_read() -> None:
    drawn = Picture(b"body\nwith a newline", PICTURE.cut, (Box(1, 2, 30, 30), Box(40, 5, 9, 9)))
    assert decode(encode(drawn)) == drawn
    none_found = Picture(b"body", PICTURE.cut, ())
    assert decode(encode(none_found)) == none_found
    assert decode(b"face 10,20,300,300\n" + PICTURE.body) == PICTURE  # written before faces
    assert decode(b"face 10,20,300,300\t3 1,2,3,3\nbody") is None  # not what it claims


def test_entries_expire_after_the_cache_ttl(server: RedisServer) -> None:
    async def scenario() -> None:
        cache = tier(server.url(), ttl_s=1)
        await cache.put("k", PICTURE)
        assert 0 < Redis.from_url(server.url()).ttl("animegan:v1:k") <= 1
        await asyncio.sleep(1.3)
        assert await cache.get("k") is None
        await cache.close()

    run(scenario)


def test_two_prefixes_never_read_each_other(server: RedisServer) -> None:
    async def scenario() -> None:
        blue, green = tier(server.url(), prefix="blue:v1:"), tier(server.url(), prefix="green:v1:")
        await blue.put("k", PICTURE)
        assert await green.get("k") is None
        assert await blue.get("k") == PICTURE
        newer = tier(server.url(), prefix="blue:v2:")  # a new format never reads the old one
        assert await newer.get("k") is None
        for cache in (blue, green, newer):
            await cache.close()

    run(scenario)


def test_a_value_over_the_limit_is_never_sent(server: RedisServer) -> None:
    async def scenario() -> None:
        cache = tier(server.url(), max_value_bytes=1000)
        await cache.put("big", Picture(b"x" * 4000, PICTURE.cut))
        assert cache.stats()["too_large"] == 1 and cache.stats()["writes"] == 0
        await cache.close()

    run(scenario)
    assert Redis.from_url(server.url()).keys("*") == []


def test_a_value_redis_refuses_is_counted_and_no_outage(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, maxmemory="2mb").start()
    try:

        async def scenario() -> None:
            cache = tier(server.url())
            await cache.put("big", Picture(b"x" * 4_000_000, PICTURE.cut))  # over maxmemory
            assert cache.stats()["refused"] == 1 and not cache.down
            assert await cache.get("big") is None and cache.stats()["misses"] == 1
            await cache.close()

        run(scenario)
    finally:
        server.kill()


def test_an_unreadable_value_is_a_miss(server: RedisServer) -> None:
    Redis.from_url(server.url()).set("animegan:v1:k", b"\xff\xfe not a picture")

    async def scenario() -> None:
        cache = tier(server.url())
        assert await cache.get("k") is None
        assert cache.stats()["unreadable"] == 1
        await cache.close()

    run(scenario)


def test_redis_killed_then_restarted_is_one_episode_logged_once(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ray.serve")

    async def scenario() -> None:
        cache = tier(server.url())
        await cache.put("k", PICTURE)
        server.kill()
        started = time.monotonic()
        for _ in range(20):  # a burst of requests during the outage
            assert await cache.get("k") is None
        assert time.monotonic() - started < 2  # one try, then skipped until retry_s
        stats = cache.stats()
        assert stats["available"] is False and stats["episodes"] == 1
        assert stats["unavailable"] >= 1 and stats["skipped"] >= 10
        server.start()  # empty: no persistence
        await asyncio.sleep(0.4)  # past retry_s
        assert await cache.get("k") is None and not cache.down
        await cache.put("k", PICTURE)
        assert await cache.get("k") == PICTURE
        await cache.close()

    run(scenario)
    outages = [r for r in caplog.records if "unavailable" in r.getMessage()]
    returns = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(outages) == 1 and len(returns) == 1


def test_redis_down_at_start_up_is_served_without(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)  # never started

    async def scenario() -> None:
        cache = tier(server.url())
        assert await cache.get("k") is None
        await cache.put("k", PICTURE)
        assert cache.down and cache.stats()["episodes"] == 1
        await cache.close()

    run(scenario)


def test_a_slow_redis_is_left_after_the_timeout(server: RedisServer) -> None:
    async def scenario() -> None:
        cache = tier(server.url(), timeout_s=0.2)
        await cache.put("k", PICTURE)
        server.pause()
        try:
            started = time.monotonic()
            assert await cache.get("k") is None
            assert time.monotonic() - started < 0.5
            assert cache.down
        finally:
            server.resume()
        await cache.close()

    run(scenario)


def test_a_wrong_password_is_an_outage_whose_log_never_shows_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ray.serve")
    server = RedisServer(tmp_path, password=PASSWORD).start()
    try:

        async def scenario() -> None:
            wrong = tier(server.url(password="not-the-password"))
            assert await wrong.get("k") is None
            assert wrong.down and wrong.stats()["unavailable"] == 1
            await wrong.close()
            right = tier(server.url())
            await right.put("k", PICTURE)
            assert await right.get("k") == PICTURE
            await right.close()

        run(scenario)
    finally:
        server.kill()
    (outage,) = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert "Authentication" in outage or "password" in outage, outage
    assert "not-the-password" not in caplog.text and PASSWORD not in caplog.text
