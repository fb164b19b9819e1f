"""Clips the tests make with PyAV and Pillow: a pan across a real photo with a tone as its sound,
a variable frame rate, a phone's rotation, animated pictures, and hostile files."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

PHOTO = Path(__file__).resolve().parents[1].parent / "shared" / "photos" / "kimono-street.jpg"
TONE_HZ = 440
SAMPLE_RATE = 16_000


def pan_frames(count: int, width: int = 96, height: int = 64) -> list[np.ndarray]:
    """`count` views of the photo, each a little further right (every frame differs)."""
    photo = Image.open(PHOTO).convert("RGB")
    photo.thumbnail((width * 3, height * 3))
    pixels = np.asarray(photo)
    step = max(1, (pixels.shape[1] - width) // max(1, count))
    return [pixels[:height, i * step : i * step + width].copy() for i in range(count)]


def video(
    frames: list[np.ndarray],
    stamps: list[int],
    *,
    time_base: Fraction = Fraction(1, 1000),
    format: str = "mp4",
    codec: str = "libx264",
    sound_seconds: float = 0.0,
    sound_codec: str = "aac",
    rotation: int = 0,
) -> bytes:
    """A clip of `frames` at `stamps` (in `time_base`), with a tone of `sound_seconds`."""
    out = io.BytesIO()
    with av.open(out, "w", format=format) as container:
        stream: Any = container.add_stream(codec) if frames else None
        if stream is not None:
            stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
            stream.pix_fmt = "yuv420p" if codec in ("libx264", "libvpx-vp9") else "yuv444p"
            stream.time_base = stream.codec_context.time_base = time_base
            if rotation:
                stream.set_display_rotation(rotation)
        sound: Any = None
        if sound_seconds:
            sound = container.add_stream(sound_codec, rate=SAMPLE_RATE)
            sound.layout = "mono"
        for pixels, stamp in zip(frames, stamps, strict=True):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = stamp, time_base
            container.mux(stream.encode(frame))
        if stream is not None:
            container.mux(stream.encode(None))
        if sound is not None:
            _tone(container, sound, sound_seconds)
    return out.getvalue()


def _tone(container: Any, sound: Any, seconds: float) -> None:
    samples = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = (0.3 * np.sin(2 * np.pi * TONE_HZ * samples)).astype(np.float32)[None, :]
    for start in range(0, wave.shape[1], 1024):
        frame = av.AudioFrame.from_ndarray(
            wave[:, start : start + 1024], format="flt", layout="mono"
        )
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        container.mux(sound.encode(frame))
    container.mux(sound.encode(None))


def pan(count: int = 12, fps: int = 24, **options: object) -> bytes:
    """A constant-rate pan of `count` frames with a tone as long as the clip."""
    stamps = [i * 1000 // fps for i in range(count)]
    return video(pan_frames(count), stamps, sound_seconds=count / fps, **options)  # type: ignore[arg-type]


VFR_STAMPS = [0, 33, 66, 150, 200, 400, 433, 466, 700, 1000]  # ms: bursts and pauses


def variable_rate() -> bytes:
    return video(pan_frames(len(VFR_STAMPS)), VFR_STAMPS)


def animation(count: int = 6, format: str = "GIF", duration_ms: int = 80) -> bytes:
    """An animated picture of `count` different frames."""
    images = [Image.fromarray(f) for f in pan_frames(count)]
    out = io.BytesIO()
    images[0].save(
        out, format, save_all=True, append_images=images[1:], duration=duration_ms, loop=0
    )
    return out.getvalue()


def decoded(data: bytes) -> tuple[list[np.ndarray], list[float], float, list[str]]:
    """A clip's frames (RGB), their times in seconds, its duration and its streams' codecs."""
    with av.open(io.BytesIO(data), "r") as container:
        codecs = [s.codec_context.name for s in container.streams]
        duration = (container.duration or 0) / av.time_base
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    return frames, times, duration, codecs
