"""The `animegan` application on a real local Ray cluster, over real HTTP and real handles."""

from __future__ import annotations

import ast
import asyncio
import io
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from deployments.core import imaging, weights
from deployments.core.errors import InvalidImage, UnknownStyle, UnsupportedFormat
from deployments.core.settings import Settings
from deployments.model import REPORT_EVERY_S
from tests.conftest import ROOT, Service, jpeg_bytes, smooth_picture
from tests.reference import reference_stylize

pytestmark = pytest.mark.timeout(600)


def unique_jpeg(seed: int, width: int = 96, height: int = 64) -> bytes:
    return jpeg_bytes(smooth_picture(width, height, seed=seed))


def post(service: Service, data: bytes, **params: str | int) -> httpx.Response:
    return httpx.post(f"{service.url}/v1/stylize", content=data, params=params, timeout=60)


def stats(service: Service) -> dict:
    return httpx.get(f"{service.url}/v1/stats", timeout=10).json()


def settled_stats(service: Service) -> dict:
    """`stats` once the model replicas have reported their last inferences (at most every
    REPORT_EVERY_S, the last of a busy spell at the end of that wait)."""
    time.sleep(REPORT_EVERY_S + 0.5)
    return stats(service)


# -- routes ---------------------------------------------------------------------------------


def test_healthz_is_ok_once_styles_are_ready(service: Service) -> None:
    answer = httpx.get(f"{service.url}/healthz")
    assert answer.status_code == 200 and answer.json()["status"] == "ok"


def test_styles_lists_every_style_with_its_state(service: Service) -> None:
    listed = httpx.get(f"{service.url}/v1/styles").json()
    assert [s["name"] for s in listed] == Settings().styles
    assert all(s["ready"] and not s["verified"] and s["description"] for s in listed)


def test_a_miss_then_a_hit_with_the_documented_headers(service: Service) -> None:
    image = unique_jpeg(1)
    first = post(service, image, style="paprika", size=64)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png"
    assert first.headers["x-cache"] == "miss" and first.headers["x-style"] == "paprika"
    assert Image.open(io.BytesIO(first.content)).size == (64, 43)
    second = post(service, image, style="paprika", size=64)
    assert second.headers["x-cache"] == "hit"
    assert second.headers["etag"] == first.headers["etag"]
    assert second.content == first.content


def test_size_original_answers_a_fifty_megapixel_upload_at_max_size(service: Service) -> None:
    """A 40,000 x 1,250 px panorama (50 megapixels): a 2048 px result, cut to `max_size`."""
    ramp = np.linspace(0, 255, 40_000, dtype=np.float32)
    row = np.stack([ramp, 255 - ramp, np.full_like(ramp, 128)], -1).astype(np.uint8)
    panorama = jpeg_bytes(np.broadcast_to(row[None], (1250, 40_000, 3)).copy())
    answer = post(service, panorama, style="paprika", size="original")
    assert answer.status_code == 200, answer.text
    assert Image.open(io.BytesIO(answer.content)).size == (2048, 64)
    again = post(service, panorama, style="paprika", size=2048)  # the same request
    assert again.headers["x-cache"] == "hit"
    too_big = post(service, panorama, style="paprika", size=4096)
    assert too_big.status_code == 400 and "between 16 and 2048" in too_big.text


def test_fp32_output_matches_the_reference_port(service: Service, photo_bytes: bytes) -> None:
    answer = post(service, photo_bytes, style="face_paint_512_v1", size=128)
    assert answer.status_code == 200, answer.text
    served = np.asarray(Image.open(io.BytesIO(answer.content)))
    settings = Settings()
    prepared, _ = imaging.load(photo_bytes, size=128, crop="none", max_pixels=settings.max_pixels)
    found = weights.inspect(weights.OFFICIAL["face_paint_512_v1"], service.weights_dir)
    assert found is not None
    expected = reference_stylize(weights.load_state_dict(found), prepared)
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1


def test_multipart_uploads_take_parameters_as_form_fields(service: Service) -> None:
    answer = httpx.post(
        f"{service.url}/v1/stylize",
        files={"image": ("x.jpg", unique_jpeg(2), "image/jpeg")},
        data={
            "style": "celeba_distill",
            "size": "48",
            "crop": "square",
            "format": "jpeg",
            "quality": "70",
        },
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(answer.content)).size == (48, 48)


def test_transform_keeps_the_seed_services_contract(service: Service) -> None:
    answer = httpx.post(
        f"{service.url}/transform", files={"image": ("a.jpg", unique_jpeg(3, 400, 300))}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    png = bytes.fromhex(answer.json()["image_base64"])
    assert Image.open(io.BytesIO(png)).size == (256, 192)


def test_unknown_routes_answer_json(service: Service) -> None:
    answer = httpx.get(f"{service.url}/v2/nothing")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"


def test_eight_identical_requests_in_flight_run_the_model_once(service: Service) -> None:
    image = unique_jpeg(5, 512, 512)
    before = settled_stats(service)["model"]["inferences"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            params: dict[str, str | int] = {"style": "paprika", "size": 512}
            url = f"{service.url}/v1/stylize"
            return await asyncio.gather(
                *(client.post(url, content=image, params=params) for _ in range(8))
            )

    answers = asyncio.run(burst())
    assert [a.status_code for a in answers] == [200] * 8
    assert sorted(a.headers["x-cache"] for a in answers) == ["miss"] + ["shared"] * 7
    assert len({a.content for a in answers}) == 1
    assert settled_stats(service)["model"]["inferences"] == before + 1


def test_stats_reports_cache_model_and_batching(service: Service) -> None:
    post(service, unique_jpeg(6), size=32)
    report = stats(service)
    assert {"entries", "bytes", "hits", "misses", "shared", "evictions"} <= set(report["cache"])
    model = report["model"]
    assert model["replicas"] >= 1 and model["inferences"] >= 1
    assert sum(model["batch_sizes"].values()) == model["batches"]
    assert all(cap >= 1 for cap in model["batch_caps"])
    assert all(depth >= 0 for depth in model["queue_depths"])


# -- the Python handle ------------------------------------------------------------------------


def test_a_python_handle_gets_the_same_bytes_and_the_same_cache(service: Service) -> None:
    from ray import serve

    image = unique_jpeg(7)
    over_http = post(service, image, style="paprika", size=48)
    handle = serve.get_app_handle("animegan")
    via_handle = handle.stylize.remote(image, style="paprika", size=48).result(timeout_s=60)
    assert via_handle == over_http.content
    jpeg = handle.stylize.remote(image, style="paprika", size=48, format="jpeg").result(
        timeout_s=60
    )
    assert jpeg[:3] == b"\xff\xd8\xff"


HANDLE_API = {"stylize", "submit", "job"}  # README "From another Ray app"


def test_the_handle_exposes_only_its_documented_api(service: Service) -> None:
    """Serve calls any attribute a handle names: internals must not be attributes at all."""
    from ray import serve
    from ray.serve._private.http_util import ASGIAppReplicaWrapper
    from ray.serve.exceptions import RayServeException

    handle = serve.get_app_handle("animegan")
    for internal in ("infer", "_answer", "process", "compute", "observe", "key", "_run_job"):
        with pytest.raises(RayServeException, match="does not exist"):
            getattr(handle, internal).remote(b"x", "paprika").result(timeout_s=30)
    with pytest.raises(Exception):  # noqa: B017 - an attribute, not a method: any refusal
        handle.service.remote().result(timeout_s=30)
    with pytest.raises(RayServeException, match="Available methods") as refused:
        handle.no_such_method.remote().result(timeout_s=30)
    listed = re.search(r"Available methods: (\[.*?\])", str(refused.value))
    assert listed is not None
    callable_names = set(ast.literal_eval(listed.group(1)))
    serves_own = {name for name in dir(ASGIAppReplicaWrapper) if not name.startswith("__")}
    serves_own.add("_asgi_app")  # the Starlette app Serve keeps on the replica (`_set_asgi_app`)
    assert callable_names - serves_own == HANDLE_API


def test_either_way_to_the_model_gives_the_same_pixels(service: Service) -> None:
    """Usual pictures go to the model over gRPC, larger ones through Ray's object store."""
    from ray import serve

    from deployments.model_client import DIRECT_MAX_BYTES

    model = serve.get_deployment_handle("StyleModel", app_name="animegan")
    pixels = smooth_picture(96, 64, seed=21)
    by_object_store = model.infer.remote(pixels, "paprika").result(timeout_s=60)
    direct = model.options(_by_reference=False).infer.remote(pixels, "paprika").result(timeout_s=60)
    assert direct.dtype == np.uint8 and np.array_equal(direct, by_object_store)
    side = 850  # its pixels are over the direct way's limit
    assert side * side * 3 > DIRECT_MAX_BYTES
    large = post(service, jpeg_bytes(smooth_picture(side, side, seed=22)), size=side)
    assert large.status_code == 200, large.text
    assert Image.open(io.BytesIO(large.content)).size == (side, side)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"image": b"not an image"}, UnsupportedFormat),
        ({"image": b"\xff\xd8\xff\xe0 broken"}, InvalidImage),
        ({"image": b"x", "style": "nope"}, UnknownStyle),
    ],
)
def test_the_handle_raises_the_cores_typed_errors(
    service: Service, kwargs: dict, error: type
) -> None:
    from ray import serve

    with pytest.raises(error):
        serve.get_app_handle("animegan").stylize.remote(**kwargs).result(timeout_s=60)


def test_the_readme_example_of_a_second_app_runs(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray import serve

    readme = (ROOT / "README.md").read_text()
    (example,) = re.findall(r"<!-- second-app -->\s*```python\n(.*?)```", readme, flags=re.S)
    (tmp_path / "photo.jpg").write_bytes(unique_jpeg(8))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme_example"}
    try:
        exec(compile(example, "README.md", "exec"), namespace)
    finally:
        serve.delete("postcards")
    assert Image.open(io.BytesIO(namespace["result"])).size == (96, 64)
