"""Bytes in, pixels out, and back: decoding with limits, orientation, colour, resizing, encoding.

The pixel limit is checked from the header before the full decode, so a decompression bomb
costs a header parse (the byte limit is the upload's, checked where the bytes arrive). JPEGs
that will be shrunk are decoded at a reduced DCT scale (Pillow's draft mode), which is several
times cheaper for large photos.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from . import faces
from .complete import check_complete
from .errors import InvalidImage, TooLarge, UnsupportedFormat
from .settings import Crop, ImageFormat

# Formats we decode; everything else Pillow knows (EPS, PDF, ...) is refused unopened.
DECODABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers MPO

log = logging.getLogger(__name__)

DRAFTABLE = ("JPEG", "MPO")  # formats Pillow can decode at a reduced scale (JPEG's DCT scaling)

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
MIN_FACE_SEARCH_SIDE = 32  # smaller pictures hold no face the detector could find


CutHow = Literal["face", "centre", "square", "none"]


@dataclass(frozen=True)
class Cut:
    """Where a picture was cut from the upright upload, and how: `face`, `centre` (a face was
    asked for and none found), `square` or `none`."""

    how: CutHow
    box: faces.Box

    def header(self) -> str:
        """The `X-Crop` header's value: `face 120,40,300,300`."""
        return f"{self.how} {self.box.x},{self.box.y},{self.box.width},{self.box.height}"

    @classmethod
    def parse(cls, header: str) -> Cut:
        how, numbers = header.split(" ")
        if how not in get_args(CutHow):
            raise ValueError(f"not a crop: {header!r}")
        x, y, width, height = (int(n) for n in numbers.split(","))
        return cls(how, faces.Box(x, y, width, height))  # type: ignore[arg-type]


def load(data: bytes, *, size: int, crop: Crop, max_pixels: int) -> tuple[np.ndarray, Cut]:
    """Decode `data`, cut it as `crop` asks and fit it to `size`.

    Returns an (H, W, 3) uint8 RGB array, upright, and where it was cut from.
    """
    width, height, image = _upright(data, max_pixels)
    if crop == "face":
        if image is None:  # a JPEG's face is looked for on a copy decoded at reduced scale
            image = decode(
                data, max_pixels=max_pixels, scale=faces.DETECT_SIDE / max(width, height)
            )
        seen = image
        cut = face_cut(seen, width, height, lambda: _larger(data, seen, width, height, max_pixels))
    elif crop == "square":
        cut = Cut("square", faces.centre_square(width, height))
    else:
        cut = Cut("none", faces.Box(0, 0, width, height))
    scale = min(1.0, size / max(cut.box.width, cut.box.height))
    if image is None or image.width < math.ceil(width * scale):
        image = decode(data, max_pixels=max_pixels, scale=scale)
    return np.asarray(fit(image, size=size, box=_box_in(image, cut, width))), cut


def face_cut(
    image: Image.Image, width: int, height: int, larger: Callable[[], Image.Image] | None = None
) -> Cut:
    """The portrait square around the most prominent face in `image` (the upright upload,
    `width` x `height`, maybe decoded smaller); the centre square if none is found. Small
    faces are looked for on a larger copy (`larger`, else `image`) only when the small copy
    shows none: that pass costs 4x as much."""
    found = detect(image, width, height, side=faces.DETECT_SIDE)
    if not found and max(width, height) > faces.DETECT_SIDE:
        found = detect(image if larger is None else larger(), width, height)
    face = faces.most_prominent(found, width, height)
    if face is None:
        return Cut("centre", faces.centre_square(width, height))
    return Cut("face", faces.portrait_box(face, width, height))


def detect(
    image: Image.Image, width: int, height: int, *, side: int = faces.SMALL_FACES_SIDE
) -> list[faces.Box]:
    """The faces in `image` (the upright upload, `width` x `height`, maybe decoded smaller),
    looked for on its grey copy of long side `side`, as boxes in the upload's pixels. For
    small faces a smaller picture is enlarged (at most twice) to that side: a 32 px face in a
    1280 px photo is found at 40 px."""
    if min(image.size) < MIN_FACE_SEARCH_SIDE:
        return []
    sight = image.convert("L")
    scale = side / max(sight.size)
    small = side == faces.SMALL_FACES_SIDE  # only that copy is ever enlarged
    most = faces.MAX_ENLARGE * max(width, height) if small else max(sight.size)
    scale = min(scale, most / max(sight.size))
    if scale < 1.0:
        sight.thumbnail((side, side), Image.Resampling.BILINEAR)
    elif scale > 1.0:
        size = (round(sight.width * scale), round(sight.height * scale))
        sight = sight.resize(size, Image.Resampling.BILINEAR)
    try:
        found = faces.find_faces(np.asarray(sight))
    except Exception as exc:  # an odd picture must not fail the request: no face, then
        log.warning("face detection failed (%s: %s); none found", type(exc).__name__, exc)
        return []
    return [face.scaled(width / sight.width) for face in found]


@dataclass(frozen=True)
class FaceCut:
    """A face's portrait square from the upright upload, and where that square is in the result."""

    pixels: np.ndarray  # (side, side, 3) uint8
    square: faces.Box  # in the result's pixels


def face_cuts(
    data: bytes, cut: Cut, result: tuple[int, int], *, side: int, max_faces: int, max_pixels: int
) -> list[FaceCut]:
    """The `max_faces` largest faces inside `cut` (`result` is its size once fitted), each
    as its portrait square (moved inside the cut) from the upload, at `side` x `side` px."""
    width, height, image = _upright(data, max_pixels)
    image = _larger(data, image, width, height, max_pixels)
    found = [face for face in detect(image, width, height) if faces.holds(cut.box, face.centre)]
    squares = [faces.portrait_box_in(face, cut.box) for face in faces.largest(found, max_faces)]
    if not squares:
        return []
    needed = min(1.0, side / min(square.width for square in squares))
    if image.width < math.ceil(width * needed):  # small faces are cut from a larger decode
        image = decode(data, max_pixels=max_pixels, scale=needed)
    into = result[0] / cut.box.width
    cuts = []
    for square in squares:
        face = fit(image, size=side, box=square.scaled(image.width / width))
        pixels = face.resize((side, side), Image.Resampling.LANCZOS) if face.width < side else face
        left, top = round((square.x - cut.box.x) * into), round((square.y - cut.box.y) * into)
        edge = max(1, min(round(square.width * into), result[0] - left, result[1] - top))
        cuts.append(FaceCut(np.asarray(pixels), faces.Box(left, top, edge, edge)))
    return cuts


def _upright(data: bytes, max_pixels: int) -> tuple[int, int, Image.Image | None]:
    """The upload's upright width and height, and the image if it had to be decoded for
    them (formats without reduced scales are decoded in full once; a JPEG's header says)."""
    probed = probe(data, max_pixels=max_pixels)
    if probed.format in DRAFTABLE:
        return *_upright_size(probed), None
    image = decode(data, max_pixels=max_pixels)
    return image.width, image.height, image


def _larger(
    data: bytes, image: Image.Image | None, width: int, height: int, max_pixels: int
) -> Image.Image:
    """`image`, or the upload decoded anew where `image` is smaller than small faces need."""
    scale = min(1.0, faces.SMALL_FACES_SIDE / max(width, height))
    if image is not None and image.width >= math.ceil(width * scale):
        return image
    return decode(data, max_pixels=max_pixels, scale=scale)


def _box_in(image: Image.Image, cut: Cut, width: int) -> faces.Box | None:
    """`cut`'s box in the pixels of `image`, the upload decoded at reduced scale or not."""
    if cut.how == "none":
        return None
    if cut.how != "face":  # recomputed, not scaled: no rounding can move a centred square
        return faces.centre_square(*image.size)
    box = cut.box.scaled(image.width / width)
    side = min(box.width, *image.size)
    return faces.Box(min(box.x, image.width - side), min(box.y, image.height - side), side, side)


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """A JPEG's width and height once its EXIF orientation (read from the header) is applied."""
    width, height = image.size
    if image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
        return height, width
    return width, height


def decode(data: bytes, *, max_pixels: int, scale: float = 1.0) -> Image.Image:
    """An upright RGB image from encoded bytes; a JPEG is decoded at the smallest of its
    reduced scales that still gives at least `scale` of its size (several times cheaper)."""
    image = probe(data, max_pixels=max_pixels)
    try:
        check_complete(data, image)
        if scale < 1.0 and image.format in DRAFTABLE:
            _draft(image, scale)
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))
    except InvalidImage:
        raise
    except Exception as exc:  # decoders of hostile bytes fail in many ways, all "broken image"
        raise InvalidImage(f"the {image.format} image could not be decoded ({exc})") from exc


def probe(data: bytes, *, max_pixels: int) -> ImageFile.ImageFile:
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


def _open(data: bytes, *, max_pixels: int) -> ImageFile.ImageFile:
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


def _draft(image: Image.Image, scale: float) -> None:
    width, height = image.size  # as stored: the draft happens before the EXIF rotation
    image.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))


def to_rgb(image: Image.Image) -> Image.Image:
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


def fit(image: Image.Image, *, size: int, box: faces.Box | None = None) -> Image.Image:
    """Cut `box` (in the image's pixels) out if given, then shrink the long side to `size`."""
    if box is not None and (box.width, box.height) != image.size:
        image = image.crop((box.x, box.y, box.x + box.width, box.y + box.height))
    width, height = image.size
    scale = min(1.0, size / max(width, height))  # never upscale
    if scale < 1.0:
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        # reducing_gap=3 is visually identical to a full LANCZOS and much faster on big inputs.
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def encode(
    pixels: np.ndarray,
    *,
    format: ImageFormat,
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
