"""Clips through the frame path without a cluster: real PyAV and Pillow, real files; the model
is a plain function here (the live tests run the real one)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

import av
import numpy as np
import pytest
from PIL import Image, ImageSequence

from deployments.core import clips, pipeline
from deployments.core.errors import AnimeGANError, InvalidVideo, TooLarge, UnsupportedFormat
from deployments.core.media import kind_of, media_type_of
from deployments.core.options import StylizeOptions
from deployments.core.settings import Settings
from deployments.core.video import Limits, VideoSource
from deployments.ranges import byte_range
from tests import clips as made

SETTINGS = Settings()


async def negative(frames: list[np.ndarray]) -> list[np.ndarray]:
    await asyncio.sleep(0)
    return [255 - pixels for pixels in frames]


def render(
    data: bytes,
    kind: str = "video",
    stylize: clips.Stylize = negative,
    turn_megapixels: float = 0.0,
    **options: object,
) -> clips.Rendered:
    built = StylizeOptions.build(SETTINGS, kind=kind, **options)  # type: ignore[arg-type]
    source = clips.open_source(data, kind, SETTINGS)  # type: ignore[arg-type]
    window = 16 if turn_megapixels else 4
    try:
        return asyncio.run(
            clips.render(source, built, stylize, window=window, turn_megapixels=turn_megapixels)
        )
    finally:
        source.close()


def test_a_pan_comes_back_with_its_frames_times_duration_and_sound() -> None:
    clip = made.pan(12)
    rendered = render(clip, size=64)
    frames, times, duration, codecs = made.decoded(rendered.body)
    source_frames, source_times, source_duration, _ = made.decoded(clip)
    assert codecs == ["h264", "aac"]
    assert len(frames) == len(source_frames) == rendered.frames == 12
    assert times == source_times
    assert abs(duration - source_duration) < 0.05
    assert frames[0].shape == (44, 64, 3)  # 96 x 64 fitted to 64 x 43, the last row repeated
    assert media_type_of(rendered.body) == "video/mp4"
    moov, mdat = rendered.body.find(b"moov"), rendered.body.find(b"mdat")
    assert 0 < moov < mdat  # faststart: it plays while it downloads


def test_webm_gives_vp9_with_the_sound_re_encoded_as_opus() -> None:
    rendered = render(made.pan(8), size=64, format="webm")
    frames, _, _, codecs = made.decoded(rendered.body)
    assert codecs == ["vp9", "opus"]
    assert len(frames) == 8
    assert media_type_of(rendered.body) == "video/webm"


def test_a_variable_frame_rate_keeps_every_timestamp() -> None:
    rendered = render(made.variable_rate(), size=64)
    _, times, _, _ = made.decoded(rendered.body)
    assert [round(t * 1000) for t in times] == made.VFR_STAMPS


def test_a_phone_clip_comes_back_upright() -> None:
    frames = made.pan_frames(4)
    clip = made.video(frames, [0, 40, 80, 120], rotation=-90)  # shown turned a quarter clockwise
    rendered = render(clip, size=96)
    result, _, _, _ = made.decoded(rendered.body)
    assert result[0].shape[:2] == (96, 64)  # upright: taller than wide
    expected = 255 - np.rot90(frames[0], k=-1)
    assert np.abs(result[0].astype(int) - expected).mean() < 12  # up to the codec's loss


def test_a_frame_is_stylized_exactly_as_the_picture_of_it_would_be() -> None:
    clip = made.pan(6)
    seen: list[np.ndarray] = []

    async def keep(frames: list[np.ndarray]) -> list[np.ndarray]:
        seen.extend(frames)
        return frames

    render(clip, stylize=keep, size=40, crop="square")
    with av.open(io.BytesIO(clip), "r") as container:
        third = next(f for i, f in enumerate(container.decode(video=0)) if i == 2).to_image()
    png = io.BytesIO()
    third.save(png, "PNG")
    options = StylizeOptions.build(SETTINGS, size=40, crop="square")
    as_picture, _ = pipeline.decode_upload(png.getvalue(), options, SETTINGS)
    assert np.array_equal(seen[2], as_picture)


def test_frames_equal_to_the_one_before_are_stylized_once() -> None:
    still = made.pan_frames(1)[0]
    moving = made.pan_frames(3)
    clip = made.video([still] * 5 + moving, [i * 40 for i in range(8)])
    calls = 0

    async def counting(frames: list[np.ndarray]) -> list[np.ndarray]:
        nonlocal calls
        calls += len(frames)
        return frames

    rendered = render(clip, stylize=counting, size=64)
    assert rendered.frames == 8
    assert calls == rendered.computed < 8  # the still intro once (the codec may vary a frame)


def test_frames_go_to_the_model_a_turn_at_a_time_and_come_back_in_order() -> None:
    still = made.pan_frames(1)[0]
    frames = made.pan_frames(7) + [still] * 6 + made.pan_frames(5)  # a still run across turns
    clip = made.video(frames, [i * 40 for i in range(len(frames))])
    turns: list[int] = []

    async def numbered(turn: list[np.ndarray]) -> list[np.ndarray]:
        """Each frame's result is flat grey, 20 levels a frame computed: the order shows."""
        first = sum(turns)
        turns.append(len(turn))
        await asyncio.sleep(0.01 * (len(turns) % 3))  # turns end out of order
        return [np.full_like(pixels, 20 * (first + i) + 10) for i, pixels in enumerate(turn)]

    size = 64  # frames of 64 x 43: 3 of them are 0.0083 megapixels
    rendered = render(clip, stylize=numbered, turn_megapixels=0.0083, size=size)
    assert rendered.frames == len(frames) and sum(turns) == rendered.computed < len(frames)
    assert turns[0] == 3 and max(turns) == 3
    result, _, _, _ = made.decoded(rendered.body)
    written = [round((float(np.median(frame)) - 10) / 20) for frame in result]  # the codec's loss
    # Every frame computed is written in its place, a repeat as the frame it repeats.
    assert sorted(set(written)) == list(range(rendered.computed))
    assert written == sorted(written)


@pytest.mark.parametrize(
    "fmt, kind", [("GIF", "animated-gif"), ("WEBP", "animated-webp"), ("PNG", "animated-png")]
)
def test_an_animation_stays_the_same_kind_with_its_frames_and_times(fmt: str, kind: str) -> None:
    data = made.animation(5, fmt, duration_ms=80)
    assert kind_of(data) == kind
    rendered = render(data, kind, size=48)
    result = Image.open(io.BytesIO(rendered.body))
    assert result.format == fmt and getattr(result, "n_frames", 1) == 5
    durations = []
    for frame in ImageSequence.Iterator(result):
        frame.load()  # WebP tells a frame's duration once it is loaded
        durations.append(frame.info["duration"])
    assert durations == [80] * 5


def test_an_animation_may_become_an_mp4() -> None:
    rendered = render(made.animation(5), "animated-gif", size=48, format="mp4")
    _, times, _, codecs = made.decoded(rendered.body)
    assert codecs == ["h264"]
    assert [round(t * 1000) for t in times] == [0, 80, 160, 240, 320]


def test_a_video_takes_only_video_formats_and_a_still_only_picture_ones() -> None:
    with pytest.raises(AnimeGANError, match="mp4, webm"):
        StylizeOptions.build(SETTINGS, format="png", kind="video")
    with pytest.raises(AnimeGANError, match="png, jpeg, webp"):
        StylizeOptions.build(SETTINGS, format="mp4")
    assert StylizeOptions.build(SETTINGS, kind="video").format == "mp4"
    assert StylizeOptions.build(SETTINGS, kind="animated-gif").format == "gif"


def test_stylize_refuses_a_video_and_a_long_animation_naming_jobs() -> None:
    with pytest.raises(UnsupportedFormat, match="/v1/jobs"):
        pipeline.check_sync(made.pan(4), "video", SETTINGS)
    long = made.animation(SETTINGS.max_sync_frames + 1)
    with pytest.raises(TooLarge, match="/v1/jobs"):
        pipeline.check_sync(long, "animated-gif", SETTINGS)
    pipeline.check_sync(made.animation(3), "animated-gif", SETTINGS)


def test_a_job_weighs_one_frame_and_counts_the_frames_from_the_header() -> None:
    options = StylizeOptions.build(SETTINGS, size=48, kind="video")
    assert pipeline.weigh(made.pan(12), options, "video", SETTINGS) == (48 * 32 / 1e6, 12)


def moov_missing() -> bytes:
    data = bytearray(made.pan(6))
    at = data.find(b"moov")
    data[at : at + 4] = b"junk"
    return bytes(data)


def ten_hours() -> bytes:
    frames = made.pan_frames(2)
    return made.video(frames, [0, 36_000_000])  # ms: a frame at ten hours


def tiny_frames() -> bytes:
    frames = [np.full((1, 1, 3), 90 * i, np.uint8) for i in range(3)]
    return made.video(frames, [0, 40, 80], format="matroska", codec="ffv1")


def wide_frames() -> bytes:
    frames = [np.zeros((4, 20_000, 3), np.uint8)] * 2
    return made.video(frames, [0, 40], format="matroska", codec="ffv1")


HOSTILE: list[tuple[str, Callable[[], bytes], type[AnimeGANError]]] = [
    ("not a video, though it says ftyp", lambda: b"\0\0\0\x18ftypisom" + bytes(200), InvalidVideo),
    ("truncated to a tenth", lambda: made.pan(12)[: len(made.pan(12)) // 10], InvalidVideo),
    ("truncated to a half", lambda: made.pan(12)[: len(made.pan(12)) // 2], InvalidVideo),
    ("moov atom missing", moov_missing, InvalidVideo),
    ("no video stream", lambda: made.video([], [], sound_seconds=0.5), InvalidVideo),
    ("ten hours in the header", ten_hours, TooLarge),
    ("frames of 20,000 px, over a small pixel limit", wide_frames, TooLarge),
]


@pytest.mark.parametrize("name, make, refusal", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_videos_are_refused_with_a_clear_error(
    name: str, make: Callable[[], bytes], refusal: type[AnimeGANError]
) -> None:
    data = make()
    settings = Settings(max_pixels=20_000 * 3)
    options = StylizeOptions.build(settings, size=48, kind="video")
    with pytest.raises(refusal) as refused:
        pipeline.weigh(data, options, "video", settings)  # the header's account, at submission
        source = clips.open_source(data, "video", settings)
        try:
            asyncio.run(clips.render(source, options, negative, window=4))
        finally:
            source.close()
    assert refused.value.message


def test_frames_of_one_pixel_still_make_a_playable_clip() -> None:
    rendered = render(tiny_frames(), size=48)
    frames, _, _, _ = made.decoded(rendered.body)
    assert len(frames) == 3 and frames[0].shape == (2, 2, 3)


def test_a_header_that_undercounts_frames_is_caught_while_decoding() -> None:
    clip = made.video(made.pan_frames(8), [i * 40 for i in range(8)])
    options = StylizeOptions.build(SETTINGS, size=48, kind="video")
    source = VideoSource(clip, Limits.of(SETTINGS))
    source.limits = Limits(SETTINGS.max_pixels, 600, max_frames=5)  # as if the header had lied
    with pytest.raises(InvalidVideo, match="over 5 frames"):
        asyncio.run(clips.render(source, options, negative, window=4))
    source.close()


@pytest.mark.parametrize(
    "header, expected",
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=990-2000", (990, 999)),
        ("bytes=0-1,5-9", None),
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_a_single_byte_range_is_read_as_rfc_9110_says(
    header: str, expected: tuple[int, int] | None
) -> None:
    assert byte_range(header, 1000) == expected
