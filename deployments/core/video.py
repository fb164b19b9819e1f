"""Videos through FFmpeg (PyAV): a container's limits from its headers, its frames upright with
their timestamps, and the stylized frames written back with the sound.

Every frame keeps its presentation timestamp in the stream's own time base, so a variable
frame rate and the clip's duration survive exactly. The limits are checked from the headers
before any decoding and again while decoding, because headers lie.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from .errors import InvalidVideo, TooLarge
from .media import Upload
from .settings import Settings

log = logging.getLogger(__name__)

# Sound copied as it is where the output container plays it; anything else is re-encoded.
SOUND_COPIED = {"mp4": {"aac", "mp3"}, "webm": {"opus", "vorbis"}}
SOUND_ENCODER = {"mp4": ("aac", None), "webm": ("libopus", 48000)}  # (codec, sample rate)
VIDEO_ENCODER: dict[str, tuple[str, dict[str, str]]] = {
    "mp4": ("libx264", {"crf": "20", "preset": "veryfast"}),
    "webm": ("libvpx-vp9", {"crf": "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}),
}
UPRIGHT = {  # a frame's display rotation (degrees counter-clockwise) -> the turn that undoes it
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}
# A container whose header counts its frames may decode a few fewer (edit lists, a last
# frame cut short); fewer than this share is a truncated file.
MIN_DECODED_SHARE = 0.95


@dataclass(frozen=True)
class Limits:
    """What one clip may be: per frame, in time and in frames."""

    max_pixels: int
    max_seconds: float
    max_frames: int

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_pixels, settings.max_video_seconds, settings.max_video_frames)


@dataclass(frozen=True)
class ClipInfo:
    """A clip as its headers describe it."""

    width: int  # as stored: a rotation swaps the sides, not the work
    height: int
    frames: int  # counted in the header, or estimated from duration and rate; 0: unknown
    seconds: float  # 0: unknown
    sound: str | None  # the sound's codec


@dataclass(frozen=True)
class Frame:
    """One decoded frame, upright RGB, and its timestamp in the source's time base."""

    image: Image.Image
    stamp: int


def open_container(upload: Upload) -> Any:
    """The container for reading; a file FFmpeg cannot open is `InvalidVideo`."""
    try:
        return av.open(str(upload) if isinstance(upload, Path) else io.BytesIO(upload), "r")
    except av.FFmpegError as exc:
        raise InvalidVideo(f"the video could not be opened ({_reason(exc)})") from None


class VideoSource:
    """A video's frames and sound, read once in order; `close` it after."""

    def __init__(self, upload: Upload, limits: Limits) -> None:
        self.limits = limits
        self.container = open_container(upload)
        try:
            if not self.container.streams.video:
                raise InvalidVideo("the file has no video stream")
            self.video = self.container.streams.video[0]
            sound = self.container.streams.audio
            self.sound = sound[0] if sound else None
            self.info = self._described()
        except BaseException:
            self.container.close()
            raise
        self.time_base: Fraction = self.video.time_base
        self.decoded = 0

    def _described(self) -> ClipInfo:
        """The header's account, refused at once where it is over the limits."""
        context = self.video.codec_context
        width, height = context.width, context.height
        if width <= 0 or height <= 0:
            raise InvalidVideo("the video stream declares no frame size")
        if width * height > self.limits.max_pixels:
            raise TooLarge(
                f"the video's frames are {width:,} x {height:,} pixels; "
                f"the limit is {self.limits.max_pixels:,} pixels"
            )
        seconds = _seconds(self.video, self.container)
        if seconds > self.limits.max_seconds:
            raise TooLarge(
                f"the video lasts {seconds:,.1f} s; the limit is {self.limits.max_seconds:g} s"
            )
        rate = self.video.guessed_rate or self.video.average_rate
        frames = self.video.frames or (round(seconds * rate) if rate else 0)
        if frames > self.limits.max_frames:
            raise TooLarge(
                f"the video has {frames:,} frames; the limit is {self.limits.max_frames:,}"
            )
        codec = None if self.sound is None else self.sound.codec_context.name
        return ClipInfo(width, height, int(frames), seconds, codec)

    def items(self) -> Iterator[Frame | Any]:
        """Frames upright, in order, and the sound's packets as they come in the file."""
        streams = [self.video] if self.sound is None else [self.video, self.sound]
        last: int | None = None
        try:
            for packet in self.container.demux(*streams):
                if packet.stream is not self.video:
                    if packet.dts is not None:  # not a demuxer's flush packet
                        yield packet
                    continue
                for frame in packet.decode():
                    last = self._stamp(frame, last)
                    yield Frame(self._checked(frame), last)
        except av.FFmpegError as exc:
            raise InvalidVideo(
                f"the video stopped decoding after {self.decoded} frames ({_reason(exc)})"
            ) from None
        self._check_complete()

    def _stamp(self, frame: Any, last: int | None) -> int:
        """The frame's timestamp, made strictly increasing (an encoder refuses anything else)."""
        stamp = frame.pts if frame.pts is not None else (0 if last is None else last + 1)
        return stamp if last is None or stamp > last else last + 1

    def _checked(self, frame: Any) -> Image.Image:
        self.decoded += 1
        if self.decoded > self.limits.max_frames:
            raise InvalidVideo(f"the video has over {self.limits.max_frames:,} frames")
        if frame.width * frame.height > self.limits.max_pixels:
            raise InvalidVideo(
                f"frame {self.decoded} is {frame.width:,} x {frame.height:,} pixels; "
                f"the limit is {self.limits.max_pixels:,} pixels"
            )
        if frame.time is not None and frame.time > self.limits.max_seconds:
            raise InvalidVideo(
                f"the video runs past {self.limits.max_seconds:g} s; its header said "
                f"{self.info.seconds:,.1f} s"
            )
        return self._upright(frame)

    def _check_complete(self) -> None:
        if self.decoded == 0:
            raise InvalidVideo("no frame of the video could be decoded")
        if self.video.frames and self.decoded < self.video.frames * MIN_DECODED_SHARE:
            raise InvalidVideo(
                f"the video ends after {self.decoded} of its {self.video.frames} frames: "
                "the file is truncated or damaged"
            )

    def samples(self, count: int) -> list[Image.Image]:
        """Up to `count` upright frames spread over the clip (for finding a face), read
        before `items` (this seeks)."""
        seconds = self.info.seconds
        found = []
        for i in range(count):
            at = int(seconds * i / count / self.time_base) if seconds else 0
            try:
                self.container.seek(at, stream=self.video, backward=True, any_frame=False)
                frame = next(self.container.decode(self.video), None)
            except av.FFmpegError:
                frame = None
            if frame is not None:
                found.append(self._upright(frame))
            if not seconds:
                break
        self.container.seek(0, stream=self.video)
        return found

    @staticmethod
    def _upright(frame: Any) -> Image.Image:
        image: Image.Image = frame.to_image()
        turn = UPRIGHT.get(frame.rotation % 360)
        return image if turn is None else image.transpose(turn)

    def close(self) -> None:
        self.container.close()


def even(pixels: np.ndarray) -> np.ndarray:
    """Even sides, as yuv420p needs: the last row or column repeated where one is odd."""
    height, width = pixels.shape[:2]
    return np.pad(pixels, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _seconds(stream: Any, container: Any) -> float:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / av.time_base)
    return 0.0


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc)


class VideoWriter:
    """Stylized frames into an MP4 (H.264, `faststart`) or WebM (VP9) file, with the source's
    sound copied or re-encoded."""

    def __init__(self, path: Path, format: str, time_base: Fraction, sound: Any = None) -> None:
        options = {"movflags": "+faststart"} if format == "mp4" else {}
        self.container = av.open(str(path), "w", format=format, options=options)
        self.format = format
        self.time_base = time_base
        self.sound_in = sound
        self.sound_out: Any = None
        self.video: Any = None
        self.waiting: list[Any] = []  # sound that came before the first frame

    def add(self, pixels: np.ndarray, stamp: int) -> None:
        """One stylized frame, (H, W, 3) uint8."""
        pixels = even(pixels)
        if self.video is None:
            self._start(pixels.shape[1], pixels.shape[0])
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = stamp, self.time_base
        self.container.mux(self.video.encode(frame))

    def sound(self, packet: Any) -> None:
        if self.video is None:
            self.waiting.append(packet)
        elif self.sound_out is not None:
            self._sound(packet)

    def _start(self, width: int, height: int) -> None:
        """The streams, once the frames' size is known (a muxer takes no stream after its
        first packet)."""
        codec, options = VIDEO_ENCODER[self.format]
        self.video = self.container.add_stream(codec, options=options)
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.video.time_base = self.video.codec_context.time_base = self.time_base
        if self.sound_in is not None:
            self.sound_out = self._sound_stream(self.sound_in)
        for packet in self.waiting:
            self.sound(packet)
        self.waiting = []

    def _sound_stream(self, source: Any) -> Any:
        self.copy_sound = source.codec_context.name in SOUND_COPIED[self.format]
        if self.copy_sound:
            return self.container.add_stream_from_template(source)
        codec, rate = SOUND_ENCODER[self.format]
        stream: Any = self.container.add_stream(
            codec, rate=rate or source.codec_context.sample_rate
        )
        stream.layout = "stereo" if source.codec_context.channels > 1 else "mono"
        return stream

    def _sound(self, packet: Any) -> None:
        if self.copy_sound:
            packet.stream = self.sound_out
            self.container.mux(packet)
            return
        try:
            for frame in packet.decode():
                frame.pts = None  # the encoder counts samples itself
                self.container.mux(self.sound_out.encode(frame))
        except av.FFmpegError as exc:  # a damaged bit of sound: silence there, not a failure
            log.warning("a sound packet could not be re-encoded (%s)", _reason(exc))

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        try:
            if self.video is not None:
                self.container.mux(self.video.encode(None))
                if self.sound_out is not None and not self.copy_sound:
                    self.container.mux(self.sound_out.encode(None))
        finally:
            self.container.close()
