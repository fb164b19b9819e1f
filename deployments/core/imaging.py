"""Bytes in, pixels out, and back: decoding with limits, orientation, colour, resizing, encoding.

The pixel limit is checked from the header before the full decode, so a decompression bomb
costs a header parse (the byte limit is the upload's, checked where the bytes arrive). JPEGs
that will be shrunk are decoded at a reduced DCT scale (Pillow's draft mode), which is several
times cheaper for large photos.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImage, TooLarge, UnsupportedFormat
from .settings import Crop, OutputFormat

# Formats we decode; everything else Pillow knows (EPS, PDF, ...) is refused unopened.
DECODABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO

MEDIA_TYPES: dict[str, str] = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


def media_type_of(encoded: bytes) -> str:
    """The media type of a picture we encoded, from its first bytes."""
    if encoded.startswith(b"\x89PNG"):
        return MEDIA_TYPES["png"]
    if encoded.startswith(b"\xff\xd8"):
        return MEDIA_TYPES["jpeg"]
    return MEDIA_TYPES["webp"]


_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # the ones that swap width and height


def load(
    data: bytes,
    *,
    size: int,
    crop: Crop,
    max_pixels: int,
) -> np.ndarray:
    """Decode `data` and fit it to `size`: an (H, W, 3) uint8 RGB array, upright."""
    image = decode(data, max_pixels=max_pixels, size=size, crop=crop)
    return np.asarray(fit(image, size=size, crop=crop))


def decode(
    data: bytes,
    *,
    max_pixels: int,
    size: int | None = None,
    crop: Crop = "none",
) -> Image.Image:
    """An upright RGB image from encoded bytes; `size`/`crop` let JPEGs decode at reduced scale."""
    image = probe(data, max_pixels=max_pixels)
    try:
        if size is not None and image.format in ("JPEG", "MPO"):
            _draft(image, size=size, crop=crop)
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except Exception as exc:  # decoders of hostile bytes fail in many ways, all "broken image"
        raise InvalidImage(f"the {image.format} image could not be decoded ({exc})") from exc


def probe(data: bytes, *, max_pixels: int) -> Image.Image:
    """The image opened from its header, within the limits; nothing decoded yet (cheap)."""
    if not data:
        raise InvalidImage("the upload is empty; send the image file's bytes")
    image = _open(data, max_pixels=max_pixels)
    width, height = image.size
    if width * height > max_pixels:
        raise TooLarge(
            f"the image is {width:,} x {height:,} pixels; the limit is {max_pixels:,} pixels"
        )
    return image


def _open(data: bytes, *, max_pixels: int) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)
    except Image.DecompressionBombError as exc:  # Pillow's own, far higher guard
        raise TooLarge(
            f"the image declares over {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels; "
            f"the limit is {max_pixels:,} pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        claimed = _claimed_format(data)
        if claimed is not None:
            raise InvalidImage(
                f"the data starts like a {claimed} file but is not readable"
            ) from exc
        raise UnsupportedFormat(
            "not an image format we read; send JPEG, PNG, WebP, GIF, BMP or TIFF"
        ) from exc
    except Exception as exc:
        raise InvalidImage(f"the image header is not readable ({exc})") from exc


def _claimed_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES.items() if data.startswith(magic)), None)


def _draft(image: Image.Image, *, size: int, crop: Crop) -> None:
    """Ask the JPEG decoder for the smallest DCT scale that still covers the target size."""
    width, height = image.size
    transposed = image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS
    if transposed:
        width, height = height, width
    scale = resize_scale(width, height, size=size, crop=crop)
    if scale < 1.0:
        target = (math.ceil(width * scale), math.ceil(height * scale))
        image.draft("RGB", target[::-1] if transposed else target)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to RGB: 16-bit scaled down, transparency composited on white."""
    if image.mode == "F":  # float images are conventionally in [0, 1]
        image = _gray8(np.asarray(image, dtype=np.float64) * 255.0)
    elif image.mode.startswith("I"):  # 16-bit; Pillow's own convert clips instead of scaling
        image = _gray8(np.asarray(image, dtype=np.float64) / 257.0)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _gray8(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")


def resize_scale(width: int, height: int, *, size: int, crop: Crop) -> float:
    """The factor (at most 1: never upscale) that brings the image to `size`."""
    side = min(width, height) if crop == "square" else max(width, height)
    return min(1.0, size / side)


def fit(image: Image.Image, *, size: int, crop: Crop) -> Image.Image:
    """Centre-crop to a square if asked (as face2paint does), then shrink to `size`."""
    width, height = image.size
    if crop == "square":
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        width = height = side
    scale = resize_scale(width, height, size=size, crop="none")
    if scale < 1.0:
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        # reducing_gap=3 is visually identical to a full LANCZOS and much faster on big inputs.
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def encode(
    pixels: np.ndarray,
    *,
    format: OutputFormat,
    quality: int | None,
    png_compress_level: int,
) -> bytes:
    """Encode an (H, W, 3) uint8 array; `quality` is ignored for PNG, which uses a fast level."""
    image = Image.fromarray(pixels, "RGB")
    out = io.BytesIO()
    if format == "png":
        image.save(out, "PNG", compress_level=png_compress_level)
    elif format == "jpeg":
        image.save(out, "JPEG", quality=quality)
    else:
        image.save(out, "WEBP", quality=quality)
    return out.getvalue()
