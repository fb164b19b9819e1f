"""Refusing pictures whose image data stops short of what their header declares.

Pillow's PNG, GIF and JPEG decoders fill what is missing (black rows, index 0, grey blocks)
and report success when the data is cut short but properly ended: a zlib stream that ends
early, an LZW end code before the last pixel, a JPEG scan cut and closed with an EOI marker.
Such a file is broken, and its picture must not be stylized and cached. Its TIFF, BMP and WebP
decoders already refuse it (tests/test_imaging.py checks all six).
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import simplejpeg
from PIL import Image, ImageFile

from .errors import InvalidImage

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by colour type
# Adam7 passes: (first column, first row, column step, row step)
_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2)]
_ADAM7.append((0, 1, 1, 2))
_INFLATE_STEP = 1 << 20  # inflate in steps: the size is counted, never held


def check_complete(data: bytes, image: ImageFile.ImageFile) -> None:
    """Raise `InvalidImage` if `image` (opened from `data`, not loaded) lacks image data."""
    if image.format == "PNG":
        _check_png(data)
    elif image.format in ("JPEG", "MPO"):
        _check_jpeg(data, image)
    elif image.format == "GIF":
        _check_gif(data, image)


def _short(kind: str) -> InvalidImage:
    return InvalidImage(f"the {kind} image data stops before its last pixel: the file is cut short")


def _check_png(data: bytes) -> None:
    """The first frame's compressed data must inflate to every row the header declares."""
    width, height, depth, colour, interlaced = struct.unpack(">IIBB2xB", data[16:29])
    bits = depth * _PNG_CHANNELS.get(colour, 4)
    passes = _ADAM7 if interlaced else [(0, 0, 1, 1)]
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = math.ceil((width - x0) / dx), math.ceil((height - y0) / dy)
        if columns > 0 and rows > 0:
            expected += rows * (1 + math.ceil(columns * bits / 8))  # a filter byte a row
    inflater, produced = zlib.decompressobj(), 0
    try:
        for chunk in _png_chunks(data, b"IDAT"):
            produced += len(inflater.decompress(chunk, _INFLATE_STEP))
            while inflater.unconsumed_tail and produced < expected:
                produced += len(inflater.decompress(inflater.unconsumed_tail, _INFLATE_STEP))
            if produced >= expected:
                return
    except zlib.error as exc:
        raise InvalidImage(f"the PNG image data is corrupt ({exc})") from exc
    raise _short("PNG")


def _png_chunks(data: bytes, kind: bytes) -> list[bytes]:
    chunks, at = [], 8
    while at + 8 <= len(data):
        length, found = struct.unpack(">I4s", data[at : at + 8])
        if found == kind:
            chunks.append(data[at + 8 : at + 8 + length])
        elif chunks:  # the image data chunks are consecutive
            break
        at += 12 + length
    return chunks


def _check_jpeg(data: bytes, image: Image.Image) -> None:
    """A second, strict libjpeg-turbo decode (at 1/8 scale, ~3 ms for a 1.3 MP photo) turns
    the warnings Pillow's decoder swallows, such as a premature end of data, into refusals."""
    colours = "CMYK" if image.mode == "CMYK" else "GRAY"  # libjpeg converts YCbCr/gray only
    try:
        simplejpeg.decode_jpeg(data, colorspace=colours, min_height=1, min_width=1, strict=True)
    except ValueError as exc:
        # Only missing data is refused: other warnings (extraneous bytes between markers, say)
        # are common in cameras' files, which Pillow decodes well.
        if "premature end" in str(exc).lower():
            raise _short("JPEG") from exc


def _check_gif(data: bytes, image: ImageFile.ImageFile) -> None:
    """The first frame is decoded twice onto different backgrounds: any pixel that tells them
    apart was never written by the data."""
    tile = image.tile[0]
    if tile.extents is None:
        return
    x0, y0, x1, y1 = tile.extents
    decoded = []
    for background in (0, 255):
        canvas = Image.core.fill("L", (x1 - x0, y1 - y0), background)
        decoder = Image._getdecoder("L", "gif", tile.args)
        decoder.setimage(canvas, (0, 0, x1 - x0, y1 - y0))
        try:
            decoder.decode(data[tile.offset :])
        finally:
            decoder.cleanup()
        decoded.append(np.asarray(Image.Image()._new(canvas)))
    if not np.array_equal(decoded[0], decoded[1]):
        raise _short("GIF")
