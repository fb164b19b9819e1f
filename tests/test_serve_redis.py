"""The Redis tier on the real cluster: results survive a restart, and Redis failing is no outage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from deployments.cache import CACHE_ACTOR_NAME
from deployments.core.settings import Settings
from tests.conftest import Service, deploy_side_app, jpeg_bytes, ray_log_files, smooth_picture
from tests.redis_server import RedisServer
from tests.test_serve_examples import warmed

pytestmark = pytest.mark.timeout(600)

PASSWORD = "redis-password-in-no-log"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=PASSWORD).start()
    yield server
    server.kill()


def redis_app(service: Service, name: str, url: str, examples_dir: Path | None = None) -> str:
    settings = Settings(
        precision="fp32",
        weights_dir=service.weights_dir,
        styles=["paprika"],
        cache_redis_url=SecretStr(url),
        cache_redis_prefix=f"test-{name}:v1:",
        examples_dir=examples_dir,
        adaptive_batching=False,  # no batch curve to measure at start: these apps start faster
        max_batch_size=1,
    )
    return deploy_side_app(service, name, settings)


def stylize(url: str, seed: int) -> httpx.Response:
    image = jpeg_bytes(smooth_picture(64, 48, seed=seed))
    return httpx.post(f"{url}/v1/stylize", content=image, params={"size": 48}, timeout=60)


def ingress_stats(url: str) -> dict:
    stats: dict = httpx.get(f"{url}/v1/stats", timeout=10).json()["ingress"]
    return stats


def empty_the_cluster_cache() -> None:
    import ray

    from deployments.actors import NAMESPACE

    ray.kill(ray.get_actor(CACHE_ACTOR_NAME, namespace=NAMESPACE), no_restart=False)


def test_results_and_examples_survive_serve_and_its_cache_going_away(
    service: Service, redis_server: RedisServer, tmp_path: Path
) -> None:
    from ray import serve

    (tmp_path / "example.jpg").write_bytes(jpeg_bytes(smooth_picture(64, 48, seed=8100)))
    url = redis_app(service, "kept", redis_server.url(), tmp_path)
    first = stylize(url, 8101)
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    warmed(url)  # the example, computed at start-up
    # Everything Ray held is gone: the app (its hot cache with it) and the cluster cache.
    serve.delete("kept")
    empty_the_cluster_cache()
    url = redis_app(service, "kept", redis_server.url(), tmp_path)
    again = stylize(url, 8101)
    assert again.status_code == 200 and again.headers["x-cache"] == "hit"
    assert again.content == first.content and again.headers["x-crop"] == first.headers["x-crop"]
    warmed(url)  # the restarted service finds its example warm
    stats = ingress_stats(url)
    assert stats["redis_hits"] == 2 and "misses" not in stats  # no inference for either
    assert stats["redis"]["available"] is True and stats["redis"]["hits"] == 2
    assert PASSWORD not in httpx.get(f"{url}/v1/stats", timeout=10).text
    serve.delete("kept")


def test_redis_killed_under_load_costs_no_request_and_is_used_again(
    service: Service, redis_server: RedisServer
) -> None:
    from ray import serve

    url = redis_app(service, "flaky", redis_server.url())

    async def load(seeds: range) -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(seed: int) -> int:
                image = jpeg_bytes(smooth_picture(64, 48, seed=seed % 4 + 8200))  # hits too
                answer = await client.post(f"{url}/v1/stylize", content=image, params={"size": 48})
                return answer.status_code

            return list(await asyncio.gather(*(one(seed) for seed in seeds)))

    async def kill_midway() -> list[int]:
        running = asyncio.create_task(load(range(24)))
        await asyncio.sleep(0.5)
        redis_server.kill()
        return await running

    statuses = asyncio.run(kill_midway()) + asyncio.run(load(range(24, 32)))
    assert statuses == [200] * 32
    assert stylize(url, 8300).status_code == 200  # a miss while Redis is down
    redis = ingress_stats(url)["redis"]
    assert redis["available"] is False and redis["episodes"] == 1
    redis_server.start()  # empty, on the same port
    writes = redis["writes"]
    for seed in range(8301, 8340):  # until the retry interval has passed: new misses
        assert stylize(url, seed).status_code == 200
        redis = ingress_stats(url)["redis"]
        if redis["writes"] > writes:
            break
    assert redis["available"] is True and redis["writes"] > writes
    serve.delete("flaky")


def test_a_wrong_password_is_served_without_redis_counted_and_never_shown(
    service: Service, redis_server: RedisServer
) -> None:
    from ray import serve

    url = redis_app(service, "locked-out", redis_server.url(password="wrong-password-here"))
    answer = stylize(url, 8400)
    assert answer.status_code == 200
    redis = ingress_stats(url)["redis"]
    assert redis["available"] is False and redis["unavailable"] >= 1
    config = serve.status().applications["locked-out"]
    assert "wrong-password-here" not in repr(config)
    serve.delete("locked-out")
    logs = [path.read_bytes() for path in ray_log_files()]
    assert any(b"redis cache unavailable (AuthenticationError" in log for log in logs)
    assert not any(b"wrong-password-here" in log or PASSWORD.encode() in log for log in logs)
