from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from PIL import Image

from deployments.core import imaging
from deployments.core.errors import AnimeGANError, InvalidImage, TooLarge, UnsupportedFormat
from deployments.core.faces import centre_square
from deployments.core.settings import ImageFormat
from tests.conftest import jpeg_bytes, png_bytes, smooth_picture
from tests.hostile import jpeg_declaring, mutations, png_declaring, real_jpeg, saved, short_data

LIMITS = {"max_pixels": 50_000_000}


def decode(data: bytes, **kwargs: Any) -> Image.Image:
    return imaging.decode(data, **{**LIMITS, **kwargs})


def with_orientation(pixels: np.ndarray, orientation: int) -> bytes:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, exif=exif)
    return out.getvalue()


# -- colour modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGB", "CMYK", "YCbCr", "I", "F"])
def test_every_common_mode_decodes_to_rgb(mode: str) -> None:
    image = Image.fromarray(smooth_picture(40, 30)).convert(mode)
    container = {"CMYK": "JPEG", "YCbCr": "JPEG", "I": "TIFF", "F": "TIFF"}.get(mode, "PNG")
    out = io.BytesIO()
    image.save(out, container)
    data = out.getvalue()
    decoded = decode(data)
    assert decoded.mode == "RGB"
    assert decoded.size == (40, 30)


def test_a_cmyk_jpeg_keeps_its_colours() -> None:
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 220
    out = io.BytesIO()
    Image.fromarray(red).convert("CMYK").save(out, "JPEG", quality=95)
    pixel = np.asarray(decode(out.getvalue()))[8, 8]
    assert pixel[0] > 180 and pixel[1] < 60 and pixel[2] < 60


def test_16_bit_png_is_scaled_not_clipped() -> None:
    wide = np.full((10, 10), 32768, dtype=np.uint16)  # mid grey in 16 bits
    data = png_bytes(Image.fromarray(wide))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    assert np.asarray(decode(data))[5, 5].tolist() == [128, 128, 128]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_are_composited_on_white(mode: str) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    rgba[:4, :, 3] = 255  # top half opaque black
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    pixels = np.asarray(decode(png_bytes(image)))
    assert pixels[0, 0].tolist() == [0, 0, 0]
    assert pixels[7, 7].tolist() == [255, 255, 255]


def test_palette_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (8, 8), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.info["transparency"] = 1
    pixels = np.asarray(decode(png_bytes(image, transparency=1)))
    assert pixels[3, 3].tolist() == [255, 255, 255]


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_files_use_their_first_frame(fmt: str) -> None:
    frames = [Image.new("RGB", (12, 12), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100, lossless=True)
    pixel = np.asarray(decode(out.getvalue()))[6, 6]
    assert pixel[0] > 200 and pixel[2] < 50


# -- orientation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, expected_size", [(1, (60, 40)), (3, (60, 40)), (6, (40, 60)), (8, (40, 60))]
)
def test_exif_orientation_is_applied(orientation: int, expected_size: tuple[int, int]) -> None:
    pixels = smooth_picture(60, 40)
    pixels[:10, :10] = 255  # a white marker in the stored top-left corner
    decoded = np.asarray(decode(with_orientation(pixels, orientation)))
    assert decoded.shape[1::-1] == expected_size
    corner = {1: decoded[:5, :5], 3: decoded[-5:, -5:], 6: decoded[:5, -5:], 8: decoded[-5:, :5]}
    assert corner[orientation].mean() > 240


def test_rotated_jpeg_drafts_to_the_upright_target() -> None:
    pixels = smooth_picture(1600, 800)
    decoded = decode(with_orientation(pixels, 6), scale=256 / 1600)
    width, height = decoded.size
    assert (width, height) == (200, 400)  # drafted at 1/4: still covers 128 x 256 upright
    assert imaging.fit(decoded, size=256).size == (128, 256)


# -- limits and broken input ----------------------------------------------------------------------


def test_empty_upload_is_an_invalid_image() -> None:
    with pytest.raises(InvalidImage, match="empty"):
        decode(b"")


@pytest.mark.parametrize("bomb", [png_declaring(50_000, 50_000), jpeg_declaring(50_000, 50_000)])
def test_decompression_bombs_are_refused_from_the_header(bomb: bytes) -> None:
    with pytest.raises(TooLarge, match="the limit is 50,000,000 pixels"):
        decode(bomb)


def test_the_pixel_limit_is_a_setting() -> None:
    with pytest.raises(TooLarge):
        decode(jpeg_bytes(smooth_picture(100, 100)), max_pixels=9_999)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg_and_png_are_invalid_images(cut: float) -> None:
    for data in (
        jpeg_bytes(smooth_picture(200, 200)),
        png_bytes(Image.fromarray(smooth_picture(200, 200))),
    ):
        with pytest.raises(InvalidImage):
            decode(data[: int(len(data) * cut)])


def test_a_file_cut_inside_its_header_is_invalid_not_unsupported() -> None:
    with pytest.raises(InvalidImage, match="starts like a PNG"):
        decode(b"\x89PNG\r\n\x1a\n\0\0")


@pytest.mark.parametrize(
    "data",
    [
        b"hello, world",
        b"<html><body>hi</body></html>",
        b"%PDF-1.4\n%...",
        b"PK\x03\x04zipzip",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
    ],
)
def test_non_images_are_an_unsupported_format(data: bytes) -> None:
    with pytest.raises(UnsupportedFormat, match="JPEG, PNG, WebP"):
        decode(data)


# -- fit and draft --------------------------------------------------------------------------------


def test_fit_shrinks_the_long_side_and_never_upscales() -> None:
    big, small = Image.new("RGB", (1000, 500)), Image.new("RGB", (100, 50))
    assert imaging.fit(big, size=512).size == (512, 256)
    assert imaging.fit(small, size=512).size == (100, 50)


def test_square_crop_takes_the_centre_then_resizes() -> None:
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 100:200] = 255  # the centre square is white
    fitted = imaging.fit(Image.fromarray(pixels), size=50, box=centre_square(300, 100))
    assert fitted.size == (50, 50)
    assert np.asarray(fitted).min() > 250


def test_large_jpegs_decode_at_reduced_scale_but_cover_the_target() -> None:
    data = jpeg_bytes(smooth_picture(2000, 1200))
    drafted = decode(data, scale=256 / 2000)
    assert drafted.size == (500, 300)  # 1/4 scale: the smallest that still covers 256 x 154
    square = decode(data, scale=256 / 1200)
    assert min(square.size) >= 256
    pixels, cut = imaging.load(data, size=256, crop="square", **LIMITS)
    assert pixels.shape == (256, 256, 3) and cut.header() == "square 400,0,1200,1200"


def test_load_returns_an_upright_uint8_rgb_array(photo_bytes: bytes) -> None:
    pixels, cut = imaging.load(photo_bytes, size=512, crop="none", **LIMITS)
    assert cut.how == "none" and cut.box.x == cut.box.y == 0
    assert pixels.dtype == np.uint8 and pixels.shape[2] == 3 and max(pixels.shape[:2]) == 512


# -- encode ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, pil_name", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_encode_writes_each_format(fmt: ImageFormat, pil_name: str) -> None:
    pixels = smooth_picture(64, 48)
    data = imaging.encode(pixels, format=fmt, quality=90, png_compress_level=1)
    reopened = Image.open(io.BytesIO(data))
    assert reopened.format == pil_name and reopened.size == (64, 48)
    if fmt == "png":
        assert np.array_equal(np.asarray(reopened), pixels)


def test_jpeg_quality_changes_the_size() -> None:
    pixels = smooth_picture(128, 128)
    low = imaging.encode(pixels, format="jpeg", quality=20, png_compress_level=1)
    high = imaging.encode(pixels, format="jpeg", quality=95, png_compress_level=1)
    assert len(low) < len(high)


# -- property: damaged real photographs -----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(data=mutations(real_jpeg()))
def test_a_damaged_photo_decodes_or_is_refused_with_a_4xx_error(data: bytes) -> None:
    try:
        pixels, _ = imaging.load(data, size=32, crop="none", **LIMITS)
    except AnimeGANError as exc:
        assert 400 <= exc.http_status < 500, exc
    else:
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3


# -- image data cut short: refused in every format we decode ------------------------------------


@pytest.mark.parametrize(("name", "body"), short_data())
def test_image_data_that_stops_short_is_an_invalid_image(
    name: str, body: Callable[[], bytes]
) -> None:
    with pytest.raises(InvalidImage, match="cut short"):
        decode(body())


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {"interlace": 1}),
        ("GIF", {"interlace": True}),
        ("GIF", {"interlace": False}),
        ("JPEG", {"progressive": True}),
        ("TIFF", {"compression": "tiff_deflate"}),
        ("BMP", {}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_whole_files_pass_the_check_and_cut_ones_do_not(fmt: str, options: dict) -> None:
    data = saved(Image.fromarray(smooth_picture(120, 90)), fmt, **options)
    assert decode(data).size == (120, 90)
    with pytest.raises(InvalidImage):
        decode(data[: len(data) * 2 // 3])
