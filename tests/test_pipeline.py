"""The image work on either side of the model, pinned to exact bytes.

A change that alters these hashes changes what the service answers for the same request, so the
cache key's version (`cache_key.KEY_VERSION`) must change with it; a faster path must not.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from deployments.core import pipeline
from deployments.core.options import StylizeOptions
from deployments.core.settings import Settings
from tests.conftest import jpeg_bytes, smooth_picture

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
