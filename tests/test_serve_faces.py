"""`crop=face` on the real cluster: over HTTP, through jobs and the Python handle, cached."""

from __future__ import annotations

import io

import httpx
import pytest
from PIL import Image

from deployments.core import imaging
from tests.conftest import Service
from tests.portraits import PHOTO, faceless, pair
from tests.test_serve_app import post
from tests.test_serve_jobs import finished

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not PHOTO.exists(), reason=f"needs {PHOTO} (../shared)"),
]


def test_the_answer_says_where_the_face_was_and_the_cache_keeps_it(service: Service) -> None:
    portrait = pair()
    _, expected = imaging.load(portrait.data, size=256, crop="face", max_pixels=50_000_000)
    first = post(service, portrait.data, crop="face", size=256, style="paprika")
    assert first.status_code == 200, first.text
    assert first.headers["x-crop"] == expected.header()
    assert first.headers["x-crop"].startswith("face ")
    side = min(256, expected.box.width)
    assert Image.open(io.BytesIO(first.content)).size == (side, side)
    again = post(service, portrait.data, crop="face", size=256, style="paprika")
    assert again.headers["x-cache"] == "hit" and again.headers["x-crop"] == expected.header()
    square = post(service, portrait.data, crop="square", size=256, style="paprika")
    assert square.headers["x-cache"] == "miss"  # face and square never share a result
    assert square.headers["x-crop"] == "square 120,0,720,720"
    whole = post(service, portrait.data, size=256, style="paprika")
    assert whole.headers["x-crop"] == "none 0,0,960,720"


def test_no_face_is_a_centre_crop_and_says_so(service: Service) -> None:
    street = faceless()[0]
    answer = post(service, street.data, crop="face", size=128, style="paprika")
    assert answer.status_code == 200, answer.text
    width, height = street.size
    side = min(width, height)
    assert answer.headers["x-crop"] == f"centre {(width - side) // 2},0,{side},{side}"


def test_a_face_job_and_the_handle_crop_the_same(service: Service) -> None:
    from ray import serve

    portrait = pair()
    data = portrait.data + b"job"  # a key of its own
    submitted = httpx.post(
        f"{service.url}/v1/jobs",
        content=data,
        params={"crop": "face", "size": 200, "style": "paprika"},
        timeout=60,
    )
    assert submitted.status_code == 202, submitted.text
    job = finished(service.url, submitted.json()["id"])
    result = httpx.get(service.url + job["result"], timeout=60)
    assert result.headers["x-crop"].startswith("face ")
    handle = serve.get_app_handle("animegan")
    via_handle = handle.stylize.remote(data, style="paprika", size=200, crop="face").result(
        timeout_s=60
    )
    assert via_handle == result.content
