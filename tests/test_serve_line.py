"""The line on the live cluster: it loses no job when its actor dies (records in the GCS, uploads
with the ingress replicas), nor across a restart of the whole app with Redis; it is fair inside
the model replicas; it calls webhooks, signed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
import ray
from pydantic import SecretStr
from standardwebhooks import Webhook

from deployments.actors import NAMESPACE
from deployments.core.settings import Settings
from deployments.scheduler import SCHEDULER_ACTOR_NAME
from tests.conftest import Service, deploy_side_app
from tests.redis_server import RedisServer
from tests.test_serve_jobs import idle, picture, submit
from tests.test_webhooks import Receiver

pytestmark = pytest.mark.timeout(600)

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def line_actor(app: str) -> ray.actor.ActorHandle:
    return ray.get_actor(f"{SCHEDULER_ACTOR_NAME}:{app}", namespace=NAMESPACE)


def state(url: str, job: str) -> dict:
    """The job's JSON; {"status": "unanswered"} while the line restarts (503)."""
    try:
        answer = httpx.get(f"{url}/v1/jobs/{job}", timeout=10)
    except httpx.HTTPError:
        return {"status": "unanswered"}
    view: dict = answer.json()
    return view if answer.status_code == 200 else {"status": "unanswered", **view}


def ends(url: str, jobs: list[str], timeout_s: float = 240) -> list[str]:
    """Each job's end: `done`, or its error's code."""
    deadline = time.monotonic() + timeout_s
    found = []
    for job in jobs:
        while (view := state(url, job))["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, view
            time.sleep(0.3)
        found.append("done" if view["status"] == "done" else view["error"]["code"])
    return found


def running(url: str) -> None:
    """Wait until the line runs something (the blocker)."""
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}/v1/stats", timeout=10).json()["line"]["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_the_line_s_actor_killed_with_jobs_queued_and_running_loses_none(crowd: str) -> None:
    idle(crowd)
    blocker = submit(crowd, picture(8600, side=768), client="10.8.0.9", size=768).json()
    queued = [
        submit(crowd, picture(8610 + i), client=f"10.8.0.{i % 3}").json()["id"] for i in range(9)
    ]
    running(crowd)
    before = {job: state(crowd, job)["position"] for job in queued}
    ray.kill(line_actor("crowd"), no_restart=False)  # Ray starts it again, empty
    assert ends(crowd, [blocker["id"], *queued]) == ["done"] * 10
    stats = httpx.get(f"{crowd}/v1/stats", timeout=10).json()["line"]
    assert stats["restored"] >= 10  # from the records in the GCS, not resubmitted
    assert sorted(before.values()) == list(range(9))  # they had their places, in turn


# -- with Redis: the whole app restarted, and webhooks ------------------------------------------


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis-line"), maxmemory="256mb").start()
    yield server
    server.kill()


def durable_settings(service: Service, redis_url: str) -> Settings:
    return Settings(
        precision="fp32",
        weights_dir=service.weights_dir,
        styles=["paprika"],
        adaptive_batching=False,
        max_batch_size=1,
        cache_redis_url=SecretStr(redis_url),
        cache_redis_prefix="test-durable:v1:",
        webhook_secret=SecretStr(SECRET),
        webhook_allowed_hosts=["127.0.0.1"],
    )


def test_with_redis_a_restart_of_the_whole_app_picks_the_queue_up(
    service: Service, redis_server: RedisServer
) -> None:
    from ray import serve

    settings = durable_settings(service, redis_server.url())
    options = {"model_options": {"max_ongoing_requests": 1}}
    url = deploy_side_app(service, "durable", settings, **options)  # type: ignore[arg-type]
    receiver = Receiver([500, 204])  # a failure first
    try:
        refused = submit(url, picture(8700), callback_url="http://example.com/hook")
        assert refused.status_code == 400 and "webhook_allowed_hosts" in refused.text
        blocker = submit(url, picture(8701, side=384), client="10.8.1.9", size=384).json()
        hooked = submit(url, picture(8702), client="10.8.1.1", callback_url=receiver.url)
        jobs = [blocker["id"], hooked.json()["id"]] + [
            submit(url, picture(8710 + i), client=f"10.8.1.{i % 2}").json()["id"] for i in range(5)
        ]
        running(url)
        ray.kill(line_actor("durable"), no_restart=False)  # first a restart of the line alone
        while state(url, jobs[0])["status"] == "unanswered":
            time.sleep(0.2)
        # Then everything stops: the app, and the line's actor for good (as on a new cluster).
        serve.delete("durable")
        ray.kill(line_actor("durable"), no_restart=True)
        url = deploy_side_app(service, "durable", settings, **options)  # type: ignore[arg-type]
        assert ends(url, jobs) == ["done"] * 7  # the same ids, from Redis
        for job in jobs:
            result = httpx.get(f"{service.url}{state(url, job)['result']}", timeout=10)
            assert result.status_code == 200 and result.content.startswith(b"\x89PNG")
        deadline = time.monotonic() + 30
        while len(receiver.calls) < 2:  # a 500 first, then the retry
            assert time.monotonic() < deadline, receiver.calls
            time.sleep(0.2)
        for headers, body in receiver.calls:  # signed as the specification says
            Webhook(SECRET).verify(body, headers)
        payload = json.loads(receiver.calls[-1][1])
        assert payload["id"] == jobs[1] and payload["status"] == "done"
        assert payload["result"].startswith("/durable/v1/results/")
        assert receiver.calls[0][0]["webhook-id"] == receiver.calls[1][0]["webhook-id"]
        # The delivery counters are the line actor's own, and whichever of its three lives sent
        # the hook counted it: test_webhooks checks the counting, this test the delivery.
    finally:
        receiver.close()
        serve.delete("durable")


# -- fair inside the model replicas -------------------------------------------------------------


async def count_done(url: str, jobs: list[str]) -> int:
    async with httpx.AsyncClient(timeout=30) as client:
        answers = await asyncio.gather(*(client.get(f"{url}/v1/jobs/{j}") for j in jobs))
    return sum(a.json()["status"] == "done" for a in answers)


def test_a_lone_job_waits_behind_about_one_of_a_busy_client_s_per_replica(
    service: Service,
) -> None:
    url = service.url
    idle(url)
    many = [
        submit(url, picture(8800 + i, side=256), client="10.8.2.1", size=256).json()["id"]
        for i in range(30)
    ]
    done_before = asyncio.run(count_done(url, many))
    lone = submit(url, picture(8900, side=256), client="10.8.2.2", size=256).json()["id"]
    assert ends(url, [lone]) == ["done"]
    done_while = asyncio.run(count_done(url, many)) - done_before
    replicas = httpx.get(f"{url}/v1/stats", timeout=10).json()["line"]["slots"] // 2
    # Those running or ready in each replica when it came, one more before its turn, and
    # slack for the counting itself (256 px jobs: each outlasts a count; 17 of 60 before).
    print(f"the lone job waited while {done_while} of the other client's finished")
    assert done_while <= 5 * replicas, (done_while, replicas)
    assert ends(url, many) == ["done"] * 30
