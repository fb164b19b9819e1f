"""Hostile and odd input over real HTTP and real handles: a picture or the documented 4xx."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from PIL import Image

from deployments.core.errors import TooLarge, UnknownStyle
from tests.conftest import SERVICE_ARGS, Service
from tests.hostile import Upload, corpus, mutations, png_declaring, real_jpeg, small_jpeg

pytestmark = pytest.mark.timeout(600)

MAX_UPLOAD = SERVICE_ARGS["max_upload_bytes"]
CORPUS = corpus(MAX_UPLOAD)
DOCUMENTED_4XX = {
    400: {"invalid_image", "bad_parameter"},
    404: {"unknown_style"},
    413: {"too_large"},
    415: {"unsupported_format"},
}


def send(service: Service, upload: Upload) -> httpx.Response:
    url = f"{service.url}/v1/stylize"
    params = {"size": "32", **upload.params}  # small pictures: the point is the answer, not the art
    if upload.multipart:
        files = {upload.field: (upload.filename, upload.body(), upload.content_type)}
        return httpx.post(url, files=files, data=params, timeout=60)
    return httpx.post(
        url,
        content=upload.body(),
        params=params,
        timeout=60,
        headers={"content-type": upload.content_type},
    )


def cached(service: Service) -> tuple[int, int]:
    """Entries in the cluster cache and in the answering ingress's hot cache."""
    figures = httpx.get(f"{service.url}/v1/stats", timeout=10).json()
    return figures["cache"]["entries"], figures["ingress"]["hot_cache"]["entries"]


def assert_documented_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == code and error["message"]


def assert_still_serving(service: Service) -> None:
    answer = httpx.post(
        f"{service.url}/v1/stylize", content=small_jpeg(seed=77), params={"size": "32"}, timeout=60
    )
    assert answer.status_code == 200, answer.text


def test_the_corpus_is_at_least_thirty_inputs() -> None:
    assert len(CORPUS) >= 30 and len({u.name for u in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("upload", CORPUS, ids=[u.name for u in CORPUS])
def test_each_upload_gets_its_documented_answer(service: Service, upload: Upload) -> None:
    before = cached(service)
    answer = send(service, upload)
    if upload.code is None:
        assert answer.status_code == 200, answer.text
        Image.open(io.BytesIO(answer.content)).verify()
    else:
        assert_documented_error(answer, upload.status, upload.code)
        assert cached(service) == before  # nothing is cached for a refusal
    assert_still_serving(service)


def test_an_endless_body_without_a_length_is_cut_off_at_the_limit(service: Service) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        while sent < 4 * MAX_UPLOAD:
            sent += 64 * 1024
            yield b"\xff" * (64 * 1024)

    answer = httpx.post(f"{service.url}/v1/stylize", content=chunks(), timeout=60)
    assert_documented_error(answer, 413, "too_large")
    assert_still_serving(service)


def test_two_files_in_one_form_are_refused(service: Service) -> None:
    files = [
        ("image", ("a.jpg", small_jpeg(1), "image/jpeg")),
        ("image", ("b.jpg", small_jpeg(2), "image/jpeg")),
    ]
    answer = httpx.post(f"{service.url}/v1/stylize", files=files, timeout=60)
    assert_documented_error(answer, 400, "bad_parameter")


def test_the_python_handle_enforces_the_same_limits(service: Service) -> None:
    from ray import serve

    handle = serve.get_app_handle("animegan")
    with pytest.raises(TooLarge):
        handle.stylize.remote(b"\xff" * (MAX_UPLOAD + 1)).result(timeout_s=60)
    with pytest.raises(TooLarge, match="pixels"):
        handle.stylize.remote(png_declaring(50_000, 50_000)).result(timeout_s=60)
    with pytest.raises(UnknownStyle):
        handle.stylize.remote(small_jpeg(), style="../../weights/paprika").result(timeout_s=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutations(real_jpeg()))
def test_a_damaged_photo_gets_a_picture_or_a_documented_4xx(service: Service, data: bytes) -> None:
    answer = httpx.post(
        f"{service.url}/v1/stylize", content=data, params={"size": "32"}, timeout=60
    )
    if answer.status_code == 200:
        Image.open(io.BytesIO(answer.content)).verify()
    else:
        assert answer.json()["error"]["code"] in DOCUMENTED_4XX.get(answer.status_code, ()), (
            answer.status_code,
            answer.text,
        )
