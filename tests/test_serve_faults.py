"""Faults on the live application: replicas and the cache actor are killed, service goes on.

Runs after test_serve_app.py (same session cluster); each test leaves the app healthy.
"""

from __future__ import annotations

import time

import httpx
import pytest
import ray

from deployments.cache import CACHE_ACTOR_NAME, CACHE_NAMESPACE
from tests.conftest import Service, jpeg_bytes, smooth_picture, wait_healthy

pytestmark = pytest.mark.timeout(600)


def post(service: Service, data: bytes, **params: object) -> httpx.Response:
    return httpx.post(f"{service.url}/v1/stylize", content=data, params=params, timeout=60)


def replica_actors(deployment: str) -> list[ray.actor.ActorHandle]:
    names = ray.util.list_named_actors(all_namespaces=True)
    return [
        ray.get_actor(entry["name"], namespace=entry["namespace"])
        for entry in names
        if entry["name"].startswith(f"SERVE_REPLICA::animegan#{deployment}#")
    ]


def wait_for(condition, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.5)


def test_the_cache_survives_the_death_of_an_ingress_replica(service: Service) -> None:
    image = jpeg_bytes(smooth_picture(80, 60, seed=101))
    assert post(service, image, size=32).headers["x-cache"] == "miss"
    (ingress,) = replica_actors("Ingress")
    ray.kill(ingress, no_restart=True)
    wait_for(lambda: replica_actors("Ingress") and replica_actors("Ingress")[0] != ingress)
    wait_healthy(service.url)
    again = post(service, image, size=32)
    assert again.status_code == 200
    assert again.headers["x-cache"] == "hit"  # the new replica's hot cache is empty: the actor had it


def test_requests_are_served_while_the_cache_actor_restarts(service: Service) -> None:
    cached = jpeg_bytes(smooth_picture(80, 60, seed=102))
    assert post(service, cached, size=32).status_code == 200
    actor = ray.get_actor(CACHE_ACTOR_NAME, namespace=CACHE_NAMESPACE)
    ray.kill(actor, no_restart=False)
    answers = [post(service, jpeg_bytes(smooth_picture(40, 30, seed=200 + i)), size=32) for i in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    # The actor is back (empty); new results are cached and hit again.
    wait_for(lambda: ray.get(actor.stats.remote(), timeout=5) is not None)
    fresh = jpeg_bytes(smooth_picture(40, 30, seed=300))
    assert post(service, fresh, size=24).headers["x-cache"] == "miss"
    stats = httpx.get(f"{service.url}/v1/stats").json()
    assert stats["cache"]["entries"] >= 1
    assert post(service, fresh, size=24).headers["x-cache"] == "hit"
