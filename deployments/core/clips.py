"""A clip (a video or an animated picture) through the model, frame by frame, in order:

    decode a frame -> cut and fit it as a picture would be -> stylize, a turn's worth of
    frames at a time (up to `window` turns in flight) -> write the results in their order

Only a window of turns is ever decoded at once. A frame whose prepared pixels equal the one
before it (a still intro, a slideshow) is stylized once. Frames go to the model in turns of
about `turn_megapixels` each: one call and one turn in the line for several small frames
costs a fraction of one each. Plain asyncio: the service hands in how a turn's frames are
stylized, and the decoding and encoding (blocking) run in threads.
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
MAX_TURN_FRAMES = 32  # tiny frames: a turn still holds few enough to be retried whole
Stylize = Callable[[list[np.ndarray]], Awaitable[list[np.ndarray]]]  # one turn's frames
Turn = asyncio.Future[list[np.ndarray]]
Pending = tuple[Turn, int, int]  # a frame on its way: its turn, its place in it, its stamp
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
    turn_megapixels: float = 0.0,
    progress: Progress = lambda done, total: None,
    cut_found: Callable[[imaging.Cut], None] = lambda cut: None,
) -> Rendered:
    """The stylized clip in `options.format`, in turns of about `turn_megapixels` (a frame at
    least), `window` turns in flight; `cut_found` hears the one cut for the whole clip before
    its first frame."""
    cut = await asyncio.to_thread(clip_cut, source, options.crop)
    cut_found(cut)
    with tempfile.TemporaryDirectory(prefix="animegan-clip-") as folder:
        writer = _writer(source, options, Path(folder) / f"result.{options.format}")
        frames, computed = await _frames(
            source, cut, options.size, stylize, writer, window, turn_megapixels, progress
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
    turn_megapixels: float,
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

    turn = _NextTurn(stylize)
    pending: deque[Pending] = deque()
    group = limit = done = 0
    total = source.info.frames
    try:
        while (frame := await asyncio.to_thread(read)) is not None:
            pending.extend(turn.add(*frame))
            if not group:  # decided on the first frame: all are cut and fitted alike
                group = _group(frame[0], turn_megapixels)
                limit = window * group  # frames in flight
            if len(turn.pixels) >= group or len(pending) + len(turn.stamps) >= limit:
                pending.extend(turn.send())
            while pending and (len(pending) + len(turn.stamps) >= limit or pending[0][0].done()):
                done = await _write_next(pending, writer, done)
                progress(done, max(total, done))
        pending.extend(turn.send())
        while pending:
            done = await _write_next(pending, writer, done)
            progress(done, max(total, done))
    finally:
        for result, _, _ in pending:
            result.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*(result for result, _, _ in pending), return_exceptions=True)
    return done, turn.computed


def _group(pixels: np.ndarray, turn_megapixels: float) -> int:
    """Frames in a turn: about `turn_megapixels` of them, one at least, MAX_TURN_FRAMES at most."""
    frame_megapixels: float = pixels.shape[0] * pixels.shape[1] / 1e6
    return max(1, min(round(turn_megapixels / frame_megapixels), MAX_TURN_FRAMES))


class _NextTurn:
    """The frames read for the next turn: each distinct one once, a repeat of the frame
    before it pointing at that frame's result."""

    def __init__(self, stylize: Stylize) -> None:
        self.stylize = stylize
        self.pixels: list[np.ndarray] = []  # the distinct frames to stylize
        self.stamps: list[tuple[int, int]] = []  # each frame read: (its index in pixels, stamp)
        self.last: np.ndarray | None = None  # the frame read before, prepared
        self.sent: tuple[Turn, int] | None = None  # where the last frame sent will be
        self.computed = 0

    def add(self, pixels: np.ndarray, stamp: int) -> list[Pending]:
        """A frame read; a repeat of the last frame sent is pending at once (in order: this
        turn has no frames yet)."""
        if self.last is not None and np.array_equal(self.last, pixels):
            if self.stamps:
                self.stamps.append((self.stamps[-1][0], stamp))
                return []
            assert self.sent is not None
            return [(*self.sent, stamp)]
        self.last = pixels
        self.pixels.append(pixels)
        self.stamps.append((len(self.pixels) - 1, stamp))
        return []

    def send(self) -> list[Pending]:
        """This turn's frames on their way to the model (when it has any), in order."""
        if not self.pixels:
            return []
        result: Turn = asyncio.ensure_future(self.stylize(self.pixels))
        self.computed += len(self.pixels)
        ready = [(result, index, stamp) for index, stamp in self.stamps]
        self.sent = (result, self.stamps[-1][0])
        self.pixels, self.stamps = [], []
        return ready


async def _write_next(pending: deque[Pending], writer: Any, done: int) -> int:
    result, index, stamp = pending[0]
    pixels = (await result)[index]
    pending.popleft()
    await asyncio.to_thread(writer.add, pixels, stamp)
    return done + 1
