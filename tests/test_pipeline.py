"""The image work on either side of the model, pinned to exact bytes.

A change that alters these hashes changes what the service answers for the same request, so the
cache key's version (`cache_key.KEY_VERSION`) must change with it; a faster path must not.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from deployments.core import pipeline
from deployments.core.errors import AnimeGANError
from deployments.core.options import StylizeOptions
from deployments.core.settings import Settings
from tests.conftest import jpeg_bytes, smooth_picture
from tests.hostile import corpus

SETTINGS = Settings()
UPLOAD = jpeg_bytes(smooth_picture(640, 427, seed=7))


def sha(data: bytes | np.ndarray) -> str:
    return hashlib.sha256(data.tobytes() if isinstance(data, np.ndarray) else data).hexdigest()[:16]


@pytest.mark.parametrize(
    ("size", "crop", "pinned"),
    [
        (256, "none", "44762e99e274f3fe"),
        (512, "square", "6b8f0e0565504b94"),
        (1024, "none", "83c4334113106c49"),
    ],
)
def test_decoding_an_upload_gives_the_same_pixels(size: int, crop: str, pinned: str) -> None:
    options = StylizeOptions.build(SETTINGS, size=size, crop=crop)
    pixels, _ = pipeline.decode_upload(UPLOAD, options, SETTINGS)
    assert sha(pixels) == pinned


@pytest.mark.parametrize(
    ("format_", "pinned"),
    [("png", "fc6d8c13b88bf031"), ("jpeg", "2551e49cbcb4a7ce"), ("webp", "f27d4366a8abfaf3")],
)
def test_encoding_a_result_gives_the_same_bytes(format_: str, pinned: str) -> None:
    options = StylizeOptions.build(SETTINGS, format=format_)
    pixels = smooth_picture(256, 192, seed=8)
    assert sha(pipeline.encode_result(pixels, options, SETTINGS)) == pinned


@pytest.mark.parametrize(("size", "crop"), [(256, "none"), (512, "square"), (1024, "none")])
def test_the_work_the_line_weighs_is_the_pixels_the_model_gets(size: int, crop: str) -> None:
    options = StylizeOptions.build(SETTINGS, size=size, crop=crop)
    pixels, _ = pipeline.decode_upload(UPLOAD, options, SETTINGS)
    assert pipeline.work_of(UPLOAD, options, SETTINGS) == pixels.shape[0] * pixels.shape[1] / 1e6


def test_weighing_hostile_uploads_refuses_them_as_the_header_check_does() -> None:
    options = StylizeOptions.build(SETTINGS, size=256)
    for upload in corpus(SETTINGS.max_upload_bytes):
        try:
            pipeline.check_upload(upload.body(), SETTINGS)
        except AnimeGANError as refusal:
            with pytest.raises(type(refusal)):
                pipeline.work_of(upload.body(), options, SETTINGS)
        else:
            assert pipeline.work_of(upload.body(), options, SETTINGS) > 0, upload.name
