"""A request's image work on either side of the model, with the limits and encoding settings.

The ingress and the CLI's in-process mode both run: decode_upload -> model -> encode_result.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from . import clips, face_blend, imaging
from .errors import TooLarge, UnsupportedFormat
from .media import Kind, Upload
from .options import StylizeOptions
from .settings import ImageFormat, Settings
from .video import ClipInfo


def check_upload(data: bytes, settings: Settings) -> None:
    """Refuse what is not an image we read, or over the limits, from its header alone."""
    imaging.probe(data, max_pixels=settings.max_pixels)


def work_of(data: bytes, options: StylizeOptions, settings: Settings) -> float:
    """Megapixels the model will work on for this upload, from its header alone (refusing
    what `check_upload` refuses): its fair share in the line is measured in them."""
    # From the header's size alone: a rotation changes neither the pixels nor the long side.
    width, height = imaging.probe(data, max_pixels=settings.max_pixels).size
    return _megapixels(width, height, options)


def _megapixels(width: int, height: int, options: StylizeOptions) -> float:
    if options.crop != "none":  # a square of the short side (a face's is no larger)
        width = height = min(width, height)
    scale = min(1.0, options.size / max(width, height))
    return max(1, round(width * scale)) * max(1, round(height * scale)) / 1e6


def weigh(
    upload: Upload, options: StylizeOptions, kind: Kind, settings: Settings
) -> tuple[float, int]:
    """A job's work from its headers: megapixels (a clip's per frame) and frames (0 for a
    picture); refuses what `check_upload` or the clip limits refuse."""
    if kind == "image":
        assert isinstance(upload, bytes)
        return work_of(upload, options, settings), 0
    info = _clip_info(upload, kind, settings)
    return _megapixels(info.width, info.height, options), max(1, info.frames)


def _clip_info(upload: Upload, kind: Kind, settings: Settings) -> ClipInfo:
    """A clip's headers, checked against the limits."""
    source = clips.open_source(upload, kind, settings)
    try:
        return source.info
    finally:
        source.close()


def check_sync(upload: Upload, kind: Kind, settings: Settings) -> None:
    """Refuse what `/v1/stylize` does not answer at once: a video, a long animation."""
    if kind == "video":
        raise UnsupportedFormat(
            "a video is converted as a job: POST it to /v1/jobs and follow its progress"
        )
    if kind != "image":
        frames = _clip_info(upload, kind, settings).frames
        if frames > settings.max_sync_frames:
            raise TooLarge(
                f"the animation has {frames} frames; /v1/stylize answers at most "
                f"{settings.max_sync_frames} at once: POST it to /v1/jobs instead"
            )


def decode_upload(
    data: bytes, options: StylizeOptions, settings: Settings
) -> tuple[np.ndarray, imaging.Cut]:
    """Encoded upload -> upright (H, W, 3) uint8 pixels at the requested size and crop, and
    where they were cut from."""
    return imaging.load(data, size=options.size, crop=options.crop, max_pixels=settings.max_pixels)


def decode_faces(
    data: bytes, options: StylizeOptions, settings: Settings
) -> tuple[np.ndarray, imaging.Cut, list[imaging.FaceCut]]:
    """`decode_upload`'s pixels and cut, and the faces in them (the `max_faces` largest), each
    cut from the upload at the side its `face_style` was trained at."""
    assert options.face_style is not None
    pixels, cut = decode_upload(data, options, settings)
    found = imaging.face_cuts(
        data,
        cut,
        (pixels.shape[1], pixels.shape[0]),
        side=face_blend.face_side(options.face_style),
        max_faces=settings.max_faces,
        max_pixels=settings.max_pixels,
    )
    return pixels, cut, found


def encode_result(pixels: np.ndarray, options: StylizeOptions, settings: Settings) -> bytes:
    """Stylized pixels -> the requested output encoding."""
    return imaging.encode(
        pixels,
        format=cast(ImageFormat, options.format),  # a picture's options hold a picture format
        quality=options.quality,
        png_compress_level=settings.png_compress_level,
    )
