"""Animated pictures (GIF, WebP, APNG) through Pillow: their frames with their times, and the
stylized frames written back as the same kind of animation.

Pillow composes each frame whole (a GIF's disposal and partial frames included), so a frame
here is what a viewer shows at that moment. Times are in milliseconds, as these formats keep
them; Pillow writes an animation in one go, so the stylized frames are held until the end
(animations are short: their frames are bounded as a video's are).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
from PIL import Image, ImageSequence

from .errors import InvalidVideo, TooLarge
from .imaging import to_rgb
from .video import ClipInfo, Frame, Limits

TIME_BASE = Fraction(1, 1000)
DEFAULT_DURATION_MS = 100  # what browsers show a frame without a duration for
PILLOW_FORMATS = {"gif": "GIF", "webp": "WEBP", "png": "PNG"}


class AnimationSource:
    """An animated picture's frames, each with its start in milliseconds."""

    time_base = TIME_BASE

    def __init__(self, data: bytes, limits: Limits) -> None:
        try:
            self.image = Image.open(io.BytesIO(data), formats=tuple(PILLOW_FORMATS.values()))
            frames = int(getattr(self.image, "n_frames", 1))
        except Exception as exc:
            raise InvalidVideo(f"the animation could not be read ({exc})") from None
        width, height = self.image.size
        if width * height > limits.max_pixels:
            raise TooLarge(
                f"the animation is {width:,} x {height:,} pixels; "
                f"the limit is {limits.max_pixels:,} pixels"
            )
        if frames > limits.max_frames:
            raise TooLarge(
                f"the animation has {frames:,} frames; the limit is {limits.max_frames:,}"
            )
        self.loop = int(self.image.info.get("loop", 0))
        self.info = ClipInfo(width, height, frames, 0.0, None)
        self.end = 0  # where the last frame ends, once read

    def items(self) -> Iterator[Frame]:
        try:
            for frame in ImageSequence.Iterator(self.image):
                image = to_rgb(frame.copy())  # loaded first: WebP tells a frame's duration then
                start = self.end
                self.end += int(frame.info.get("duration") or DEFAULT_DURATION_MS)
                yield Frame(image, start)
        except (OSError, ValueError, EOFError) as exc:
            raise InvalidVideo(f"the animation stopped decoding ({exc})") from None

    def samples(self, count: int) -> list[Image.Image]:
        """The first frame (an animation is short: one square from it fits the rest)."""
        self.image.seek(0)
        return [to_rgb(self.image.copy())]

    def close(self) -> None:
        self.image.close()


class AnimationWriter:
    """Stylized frames, held, then written as one GIF, WebP or APNG."""

    def __init__(self, format: str, quality: int | None, *, loop: int = 0) -> None:
        self.format = PILLOW_FORMATS[format]
        self.quality = quality
        self.loop = loop
        self.frames: list[Image.Image] = []
        self.starts: list[int] = []

    def add(self, pixels: np.ndarray, stamp: int) -> None:
        self.frames.append(Image.fromarray(pixels, "RGB"))
        self.starts.append(stamp)

    def encode(self, end: int) -> bytes:
        """The animation, its last frame lasting until `end` (milliseconds)."""
        durations = [b - a for a, b in zip(self.starts, [*self.starts[1:], end], strict=True)]
        options: dict[str, object] = {"save_all": True, "loop": self.loop}
        if self.format == "WEBP":
            options["quality"] = self.quality
        out = io.BytesIO()
        self.frames[0].save(
            out,
            self.format,
            append_images=self.frames[1:],
            duration=[max(1, d) for d in durations],
            **options,
        )
        return out.getvalue()
