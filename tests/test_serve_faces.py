"""`crop=face` and `face_style` on the real cluster: over HTTP, through jobs and the Python
handle, cached."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from deployments.core import imaging
from deployments.core.faces import Box
from deployments.core.results import parse_faces
from tests.clips import animation
from tests.conftest import Service
from tests.portraits import PHOTO, faceless, group, pair
from tests.test_face_blend import holds
from tests.test_serve_app import post, settled_stats
from tests.test_serve_jobs import finished, idle

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


# -- face_style: the whole picture in one style, every face drawn again in another -------------


def squares_of(answer: httpx.Response) -> tuple[Box, ...]:
    header = answer.headers["x-faces"]
    squares = parse_faces(header)
    assert int(header.split(" ")[0]) == len(squares)
    return squares


def pixels_of(answer: httpx.Response) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB")).astype(int)


def test_every_face_is_drawn_in_the_face_style_and_the_rest_is_the_plain_result(
    service: Service,
) -> None:
    picture = group()
    idle(service.url)
    plain = post(service, picture.data, size=400, style="paprika")
    before_calls = settled_stats(service)["model"]["calls"]
    drawn = post(service, picture.data, size=400, style="paprika", face_style="celeba_distill")
    assert drawn.status_code == 200, drawn.text
    # The whole picture and each face are calls of their own, for the replicas to share.
    assert settled_stats(service)["model"]["calls"] - before_calls == 1 + len(picture.faces)
    assert "x-faces" not in plain.headers
    squares = squares_of(drawn)
    into = 400 / picture.size[0]
    assert len(squares) == len(picture.faces)
    for square, face in zip(squares, picture.faces, strict=True):
        assert square.width == square.height
        assert holds(square, face.scaled(into)), (square, face.scaled(into))
    before, after = pixels_of(plain), pixels_of(drawn)
    assert before.shape == after.shape
    near = np.zeros(before.shape[:2], bool)
    for square in squares:
        near[square.y : square.y + square.height, square.x : square.x + square.width] = True
        third = square.width // 3
        core = (
            slice(square.y + third, square.y + 2 * third),
            slice(square.x + third, square.x + 2 * third),
        )
        assert np.abs(after[core] - before[core]).mean() > 2, square  # drawn in another style
    # Far from every face: the plain result, but for the last bit of fp32 where the plain one
    # ran alone on the machine with two threads (serve_config's solo_threads), the other not.
    far = np.abs(after[~near] - before[~near])
    assert far.max() <= 2 and (far == 0).mean() > 0.9, (far.max(), (far == 0).mean())
    again = post(service, picture.data, size=400, style="paprika", face_style="celeba_distill")
    assert (
        again.headers["x-cache"] == "hit" and again.headers["x-faces"] == drawn.headers["x-faces"]
    )


def test_style_original_keeps_the_photo_around_the_faces(service: Service) -> None:
    picture = group()
    answer = post(service, picture.data, size=320, style="original", face_style="celeba_distill")
    assert answer.status_code == 200, answer.text
    photo, _ = imaging.load(picture.data, size=320, crop="none", max_pixels=50_000_000)
    after = pixels_of(answer)
    near = np.zeros(after.shape[:2], bool)
    for square in squares_of(answer):
        near[square.y : square.y + square.height, square.x : square.x + square.width] = True
    assert np.array_equal(after[~near], photo.astype(int)[~near])
    assert not np.array_equal(after[near], photo.astype(int)[near])


def test_a_face_style_job_lists_its_faces_and_answers_as_the_request_does(
    service: Service,
) -> None:
    picture = group()
    params: dict[str, str | int] = {
        "size": 256,
        "style": "paprika",
        "face_style": "celeba_distill",
        "crop": "square",
    }
    submitted = httpx.post(
        f"{service.url}/v1/jobs", content=picture.data + b"job", params=params, timeout=60
    )
    assert submitted.status_code == 202, submitted.text
    job = finished(service.url, submitted.json()["id"])
    assert job["status"] == "done", job
    result = httpx.get(service.url + job["result"], timeout=60)
    squares = squares_of(result)
    assert job["faces"] == [[b.x, b.y, b.width, b.height] for b in squares]
    assert result.headers["x-crop"] == "square 350,0,900,900"
    assert len(squares) == 3  # the faces whose centres the centre square holds
    direct = post(service, picture.data + b"job", **params)
    assert direct.headers["x-cache"] == "hit" and direct.content == result.content


def test_a_face_style_must_name_a_ready_style_of_a_picture(service: Service) -> None:
    picture = group()
    unknown = post(service, picture.data, face_style="nope")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_style"
    assert "face_style" in unknown.json()["error"]["message"]
    alone = post(service, picture.data, style="original")
    assert alone.status_code == 404 and alone.json()["error"]["code"] == "unknown_style"
    assert "beside a face_style" in alone.json()["error"]["message"]
    gif = animation(3)
    refused = post(service, gif, face_style="celeba_distill")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "bad_parameter"
