"""Faults on the live application: replicas and the cache actor are killed, service goes on.

Runs after test_serve_app.py (same session cluster); each test leaves the app healthy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import httpx
import pytest
import ray

from benchmarks.common import wait_healthy
from benchmarks.load import Load, in_background
from deployments.actors import NAMESPACE
from deployments.cache import CACHE_ACTOR_NAME
from tests import clips
from tests.conftest import Service, jpeg_bytes, smooth_picture

pytestmark = pytest.mark.timeout(600)


def post(service: Service, data: bytes, **params: str | int) -> httpx.Response:
    return httpx.post(f"{service.url}/v1/stylize", content=data, params=params, timeout=60)


def replica_actors(deployment: str) -> list[ray.actor.ActorHandle]:
    """The live replicas of `deployment` (one listed but dead by the lookup is left out)."""
    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith(f"SERVE_REPLICA::animegan#{deployment}#"):
            try:
                found.append(ray.get_actor(entry["name"], namespace=entry["namespace"]))
            except ValueError:  # it died between the listing and the lookup
                continue
    return found


def cached_entries(service: Service) -> int:
    return httpx.get(f"{service.url}/v1/stats", timeout=10).json()["cache"]["entries"]


def wait_for(condition: Callable[[], object], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.5)


def test_the_cache_survives_the_death_of_an_ingress_replica(service: Service) -> None:
    image = jpeg_bytes(smooth_picture(80, 60, seed=101))
    before = cached_entries(service)
    assert post(service, image, size=32).headers["x-cache"] == "miss"
    # The result is published to the actor after the answer; killing first could lose it.
    wait_for(lambda: cached_entries(service) > before)
    (ingress,) = replica_actors("Ingress")
    ray.kill(ingress, no_restart=True)
    wait_for(lambda: replica_actors("Ingress") and replica_actors("Ingress")[0] != ingress)
    wait_healthy(service.url + "/healthz")
    again = post(service, image, size=32)
    assert again.status_code == 200
    assert (
        again.headers["x-cache"] == "hit"
    )  # the new replica's hot cache is empty: the actor had it


def load(
    service: Service, *, clients: int, seed: int, size: int = 128
) -> AbstractContextManager[Load]:
    """Clients posting distinct pictures in the background until the block ends."""

    def payload(i: int) -> tuple[bytes, dict[str, str | int]]:
        return jpeg_bytes(smooth_picture(160, 120, seed=seed + i)), {"size": size}

    return in_background(service.url, "/v1/stylize", payload, clients=clients)


def test_a_model_replica_killed_under_load_is_replaced_and_nothing_hangs(service: Service) -> None:
    with load(service, clients=4, seed=5000) as running:
        wait_for(lambda: len(running.answers) >= 4)
        victim = replica_actors("StyleModel")[0]
        ray.kill(victim, no_restart=True)
        served_before = len(running.answers)
        wait_for(lambda: len(running.answers) >= served_before + 8)
    assert set(running.statuses) <= {200, 503}, [a for a in running.answers if a.status != 200]
    for answer in running.answers:
        if answer.status == 503:  # lost twice in a row: a clear, retryable error
            assert answer.code == "overloaded" and answer.retry_after
    # Serve replaces the replica; afterwards every request is a picture.
    wait_for(
        lambda: (
            len(replica_actors("StyleModel")) == 2 and victim not in replica_actors("StyleModel")
        ),
        timeout_s=120,
    )
    wait_healthy(service.url + "/healthz")
    after = [
        post(service, jpeg_bytes(smooth_picture(64, 48, seed=5900 + i)), size=32) for i in range(6)
    ]
    assert [a.status_code for a in after] == [200] * 6


def test_a_model_replica_killed_mid_clip_costs_frames_a_retry_not_the_clip(
    service: Service,
) -> None:
    clip = clips.video(clips.pan_frames(120, 144, 96), [i * 40 for i in range(120)])
    job = httpx.post(
        f"{service.url}/v1/jobs", content=clip, params={"style": "paprika", "size": 144}, timeout=60
    ).json()

    def frames_done() -> int:
        view = httpx.get(f"{service.url}/v1/jobs/{job['id']}", timeout=10).json()
        return int(view["progress"]["frames_done"])

    wait_for(lambda: frames_done() >= 10)
    victim = replica_actors("StyleModel")[0]
    ray.kill(victim, no_restart=True)
    deadline = time.monotonic() + 180
    while (view := httpx.get(f"{service.url}/v1/jobs/{job['id']}", timeout=10).json())[
        "status"
    ] not in ("done", "failed"):
        assert time.monotonic() < deadline, view
        time.sleep(0.3)
    assert view["status"] == "done", view
    frames, _, _, _ = clips.decoded(httpx.get(service.url + view["result"], timeout=10).content)
    assert len(frames) == 120
    wait_for(
        lambda: (
            len(replica_actors("StyleModel")) == 2 and victim not in replica_actors("StyleModel")
        ),
        timeout_s=120,
    )
    wait_healthy(service.url + "/healthz")


def test_requests_are_served_while_the_cache_actor_restarts(service: Service) -> None:
    cached = jpeg_bytes(smooth_picture(80, 60, seed=102))
    assert post(service, cached, size=32).status_code == 200
    actor = ray.get_actor(CACHE_ACTOR_NAME, namespace=NAMESPACE)
    with load(service, clients=3, seed=7000, size=32) as running:
        wait_for(lambda: len(running.answers) >= 3)
        ray.kill(actor, no_restart=False)
        served_before = len(running.answers)
        wait_for(lambda: len(running.answers) >= served_before + 6)
    assert [a.status for a in running.answers] == [200] * len(running.answers)
    # The actor is back (empty); new results are cached and hit again.
    wait_for(lambda: ray.get(actor.stats.remote(), timeout=5) is not None)
    fresh = jpeg_bytes(smooth_picture(40, 30, seed=300))
    assert post(service, fresh, size=24).headers["x-cache"] == "miss"
    stats = httpx.get(f"{service.url}/v1/stats").json()
    assert stats["cache"]["entries"] >= 1
    assert post(service, fresh, size=24).headers["x-cache"] == "hit"


def test_a_corrupt_weights_file_disables_its_style_and_the_others_serve(
    damaged_service: str,
) -> None:
    damaged = damaged_service
    listed = {s["name"]: s for s in httpx.get(f"{damaged}/v1/styles").json()}
    assert not listed["paprika"]["ready"] and listed["paprika"]["error"]
    assert listed["celeba_distill"]["ready"] and listed["celeba_distill"]["error"] is None
    picture = jpeg_bytes(smooth_picture(64, 48, seed=8000))
    refused = httpx.post(
        f"{damaged}/v1/stylize",
        content=picture,
        params={"style": "paprika", "size": 32},
        timeout=60,
    )
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "style_not_ready"
    assert "paprika" in refused.json()["error"]["message"]
    served = httpx.post(
        f"{damaged}/v1/stylize",
        content=picture,
        params={"style": "celeba_distill", "size": 32},
        timeout=60,
    )
    assert served.status_code == 200, served.text
    faces = httpx.post(  # a face style must be ready too
        f"{damaged}/v1/stylize",
        content=picture,
        params={"style": "celeba_distill", "face_style": "paprika", "size": 32},
        timeout=60,
    )
    assert (faces.status_code, faces.json()["error"]["code"]) == (503, "style_not_ready")
