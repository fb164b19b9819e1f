"""A request's image work on either side of the model, with the limits and encoding settings.

The ingress and the CLI's in-process mode both run: decode_upload -> model -> encode_result.
"""

from __future__ import annotations

import numpy as np

from . import imaging
from .options import StylizeOptions
from .settings import Settings


def check_upload(data: bytes, settings: Settings) -> None:
    """Refuse what is not an image we read, or over the limits, from its header alone."""
    imaging.probe(data, max_pixels=settings.max_pixels)


def work_of(data: bytes, options: StylizeOptions, settings: Settings) -> float:
    """Megapixels the model will work on for this upload, from its header alone (refusing
    what `check_upload` refuses): its fair share in the line is measured in them."""
    # From the header's size alone: a rotation changes neither the pixels nor the long side.
    width, height = imaging.probe(data, max_pixels=settings.max_pixels).size
    if options.crop != "none":  # a square of the short side (a face's is no larger)
        width = height = min(width, height)
    scale = min(1.0, options.size / max(width, height))
    return max(1, round(width * scale)) * max(1, round(height * scale)) / 1e6


def decode_upload(
    data: bytes, options: StylizeOptions, settings: Settings
) -> tuple[np.ndarray, imaging.Cut]:
    """Encoded upload -> upright (H, W, 3) uint8 pixels at the requested size and crop, and
    where they were cut from."""
    return imaging.load(data, size=options.size, crop=options.crop, max_pixels=settings.max_pixels)


def encode_result(pixels: np.ndarray, options: StylizeOptions, settings: Settings) -> bytes:
    """Stylized pixels -> the requested output encoding."""
    return imaging.encode(
        pixels,
        format=options.format,
        quality=options.quality,
        png_compress_level=settings.png_compress_level,
    )
