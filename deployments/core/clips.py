"""A clip (a video or an animated picture) through the model, frame by frame, in order:

    decode a frame -> cut and fit it as a picture would be -> stylize (up to `window` frames
    in flight, each its own turn in the line) -> write the results in their order

Only a window of frames is ever decoded at once. A frame whose prepared pixels equal the one
before it (a still intro, a slideshow) is stylized once. Plain asyncio: the service hands in
how one frame is stylized, and the decoding and encoding (blocking) run in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from . import faces, imaging
from .animation import AnimationSource, AnimationWriter
from .media import Kind, Upload
from .options import StylizeOptions
from .settings import Settings
from .video import ClipInfo, Frame, Limits, VideoSource, VideoWriter

FACE_SAMPLES = 5  # frames a clip's face square is looked for on
Stylize = Callable[[np.ndarray], Awaitable[np.ndarray]]
Progress = Callable[[int, int], None]  # frames done, frames in all (as far as known)


class Source(Protocol):
    info: ClipInfo
    time_base: Fraction  # of the frames' stamps

    def items(self) -> Iterator[Any]: ...

    def samples(self, count: int) -> list[Image.Image]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Rendered:
    """A stylized clip, how it was cut, and how many of its frames the model ran for."""

    body: bytes
    cut: imaging.Cut
    frames: int
    computed: int


def open_source(upload: Upload, kind: Kind, settings: Settings) -> Source:
    """The clip's reader, its headers checked against the limits (refusals raise here)."""
    limits = Limits.of(settings)
    if kind == "video":
        return VideoSource(upload, limits)
    assert isinstance(upload, bytes)  # animations are pictures: never spooled
    return AnimationSource(upload, limits)


def clip_cut(source: Source, crop: str) -> imaging.Cut:
    """One cut for the whole clip: a box that moved from frame to frame would be worse than
    none. For `face`, the square around the face found on sampled frames: their median centre,
    their largest side."""
    width, height = _upright_size(source)
    if crop == "none":
        return imaging.Cut("none", faces.Box(0, 0, width, height))
    if crop == "square":
        return imaging.Cut("square", faces.centre_square(width, height))
    found = [imaging.face_cut(image, *image.size) for image in source.samples(FACE_SAMPLES)]
    boxes = [cut.box for cut in found if cut.how == "face"]
    if not boxes:
        return imaging.Cut("centre", faces.centre_square(width, height))
    side = min(max(b.width for b in boxes), width, height)
    cx = statistics.median(b.centre[0] for b in boxes)
    cy = statistics.median(b.centre[1] for b in boxes)
    left = min(max(round(cx - side / 2), 0), width - side)
    top = min(max(round(cy - side / 2), 0), height - side)
    return imaging.Cut("face", faces.Box(left, top, side, side))


def _upright_size(source: Source) -> tuple[int, int]:
    first = source.samples(1)
    if first:
        return first[0].size
    return source.info.width, source.info.height


def prepare(image: Image.Image, cut: imaging.Cut, size: int) -> np.ndarray:
    """A frame's pixels for the model, exactly as `/v1/stylize` cuts and fits that frame."""
    box = None if cut.how == "none" else cut.box
    return np.asarray(imaging.fit(image, size=size, box=box))


async def render(
    source: Source,
    options: StylizeOptions,
    stylize: Stylize,
    *,
    window: int,
    progress: Progress = lambda done, total: None,
    cut_found: Callable[[imaging.Cut], None] = lambda cut: None,
) -> Rendered:
    """The stylized clip in `options.format`, frames `window` at a time (`cut_found` hears
    the one cut for the whole clip before its first frame)."""
    cut = await asyncio.to_thread(clip_cut, source, options.crop)
    cut_found(cut)
    with tempfile.TemporaryDirectory(prefix="animegan-clip-") as folder:
        writer = _writer(source, options, Path(folder) / f"result.{options.format}")
        frames, computed = await _frames(
            source, cut, options.size, stylize, writer, window, progress
        )
        body = await asyncio.to_thread(_finish, writer, source, Path(folder))
    return Rendered(body, cut, frames, computed)


def _writer(source: Source, options: StylizeOptions, path: Path) -> Any:
    if options.format in ("mp4", "webm"):
        sound = source.sound if isinstance(source, VideoSource) else None
        return VideoWriter(path, options.format, source.time_base, sound)
    loop = source.loop if isinstance(source, AnimationSource) else 0
    return AnimationWriter(options.format, options.quality, loop=loop)


def _finish(writer: Any, source: Source, folder: Path) -> bytes:
    if isinstance(writer, AnimationWriter):
        end = source.end if isinstance(source, AnimationSource) else writer.starts[-1] + 1
        return writer.encode(end)
    writer.close()
    return (folder / f"result.{writer.format}").read_bytes()


async def _frames(
    source: Source,
    cut: imaging.Cut,
    size: int,
    stylize: Stylize,
    writer: Any,
    window: int,
    progress: Progress,
) -> tuple[int, int]:
    """Decode, stylize and write every frame; (frames, frames the model ran for)."""
    items = source.items()

    def read() -> tuple[np.ndarray, int] | None:
        """The next frame prepared (its sound muxed on the way), off the event loop."""
        for item in items:
            if isinstance(item, Frame):
                return prepare(item.image, cut, size), item.stamp
            writer.sound(item)  # at once: the muxer interleaves it with the frames
        return None

    pending: deque[tuple[asyncio.Future[np.ndarray], int]] = deque()
    previous: tuple[np.ndarray, asyncio.Future[np.ndarray]] | None = None
    done = computed = 0
    total = source.info.frames
    try:
        while (frame := await asyncio.to_thread(read)) is not None:
            pixels, stamp = frame
            if previous is not None and np.array_equal(previous[0], pixels):
                result = previous[1]
            else:
                result = asyncio.ensure_future(stylize(pixels))
                computed += 1
                previous = (pixels, result)
            pending.append((result, stamp))
            while pending and (len(pending) >= window or pending[0][0].done()):
                done = await _write_next(pending, writer, done)
                progress(done, max(total, done))
        while pending:
            done = await _write_next(pending, writer, done)
            progress(done, max(total, done))
    finally:
        for result, _ in pending:
            result.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*(result for result, _ in pending), return_exceptions=True)
    return done, computed


async def _write_next(
    pending: deque[tuple[asyncio.Future[np.ndarray], int]], writer: Any, done: int
) -> int:
    result, stamp = pending[0]
    pixels = await result
    pending.popleft()
    await asyncio.to_thread(writer.add, pixels, stamp)
    return done + 1
