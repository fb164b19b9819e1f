"""Overload and deadlines: a deliberately tiny second app sheds with 503 and times out with 504."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from deployments.core.engine import Engine
from deployments.core.network import Generator
from deployments.core.settings import Settings
from deployments.core.weights import seeded_state_dict
from tests.conftest import Service, deploy_side_app, jpeg_bytes, smooth_picture

pytestmark = pytest.mark.timeout(600)

SIDE = 384  # the pictures that must be answered in time
# (BIG / SIDE)^2 = 6 times the work, on the replica's one thread (the deadline is measured
# on two): some 3-4 times past the deadline.
BIG = 960


def seconds_per_picture(side: int) -> float:
    """One fp32 run at `side` px on this machine, now: deadlines here scale with it."""
    network = Generator()
    network.load_state_dict(seeded_state_dict(0))
    engine = Engine({"s": network}, precision="fp32")
    picture = smooth_picture(side, side)
    engine.run("s", [picture])
    started = time.perf_counter()
    engine.run("s", [picture])
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def tight(service: Service) -> Iterator[str]:
    """One model replica that takes one request at a time and queues one more."""
    from ray import serve

    # A fixed deadline failed on a slower machine of this kind (a 640 px picture took over
    # 4 s there, 1.5 s here); three runs' worth plus a second of overhead fits every machine.
    deadline = 3 * seconds_per_picture(SIDE) + 1
    settings = Settings(
        precision="fp32",
        request_timeout_s=deadline,
        max_size=BIG,
        weights_dir=service.weights_dir,
        styles=["paprika"],
        adaptive_batching=False,  # one request at a time anyway: no batch curve to measure
        max_batch_size=1,
    )
    yield deploy_side_app(
        service,
        "tight",
        settings,
        model_options={"max_ongoing_requests": 1, "max_queued_requests": 1},
    )
    serve.delete("tight")


def test_every_request_ends_in_a_picture_a_503_or_a_504(tight: str) -> None:
    images = [jpeg_bytes(smooth_picture(SIDE, SIDE, seed=900 + i)) for i in range(8)]
    for image in images[6:]:  # the line measures its pace on these
        answer = httpx.post(f"{tight}/v1/stylize", content=image, params={"size": SIDE}, timeout=60)
        assert answer.status_code == 200
    images = images[:6]

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{tight}/v1/stylize", content=image, params={"size": SIDE})
                    for image in images
                )
            )

    answers = asyncio.run(flood())
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 503, 504}, [a.text for a in answers]
    assert 503 in statuses  # those that would wait past max_wait_s (half the deadline): shed
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["error"]["code"] == "overloaded"
            assert int(answer.headers["retry-after"]) >= 1
        if answer.status_code == 504:
            assert answer.json()["error"]["code"] == "timeout"


def test_a_request_past_its_deadline_gets_504(tight: str) -> None:
    big = jpeg_bytes(smooth_picture(BIG, BIG, seed=950))
    answer = httpx.post(f"{tight}/v1/stylize", content=big, params={"size": BIG}, timeout=60)
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["code"] == "timeout"
    # The replica finishes the abandoned work, then small pictures are served again.
    small = jpeg_bytes(smooth_picture(32, 32, seed=951))
    statuses = []
    for _ in range(60):
        statuses.append(
            httpx.post(
                f"{tight}/v1/stylize", content=small, params={"size": 32}, timeout=60
            ).status_code
        )
        if statuses[-1] == 200:
            break
        time.sleep(1)
    assert statuses[-1] == 200 and set(statuses) <= {200, 503, 504}
