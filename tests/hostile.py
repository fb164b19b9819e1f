"""Hostile and odd uploads, generated here: what a public endpoint must expect to receive.

Each `Upload` is one HTTP request (raw body or multipart, parameters, headers) with the answer
the API documents for it: a picture (200) or one error code. Bodies are built when asked for,
so importing this module costs nothing.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st
from PIL import Image

from tests import clips
from tests.conftest import jpeg_bytes, png_bytes, smooth_picture


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG header that claims a huge canvas, followed by almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose start-of-frame header is rewritten to claim width x height."""
    data = bytearray(jpeg_bytes(smooth_picture(16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def small_jpeg(seed: int = 0) -> bytes:
    return jpeg_bytes(smooth_picture(64, 48, seed=seed))


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (24, 24), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    return saved(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)


def palette_with_transparency() -> bytes:
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return png_bytes(image, transparency=1)


def huge_exif() -> bytes:
    """A JPEG whose EXIF block fills the 64 KiB APP1 segment (a 60,000-byte maker note)."""
    image = Image.fromarray(smooth_picture(48, 32))
    exif = image.getexif()
    exif.get_ifd(0x8769)[0x927C] = b"\0A" * 30_000
    return saved(image, "JPEG", exif=exif)


def zip_file() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("photo.jpg", small_jpeg())
    return out.getvalue()


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    return data[: int(len(data) * keep)]


# Cut short but properly ended: the decoders would fill the missing rows and report success.


def png_with_missing_rows(width: int = 200, height: int = 150, rows: int = 20) -> bytes:
    """A well-formed PNG whose one zlib stream holds `rows` of the `height` rows declared."""
    pixels = smooth_picture(width, height)
    raw = b"".join(b"\0" + pixels[row].tobytes() for row in range(rows))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
    return signature + body + png_chunk(b"IEND", b"")


def gif_with_missing_rows(interlace: bool = False) -> bytes:
    """A GIF of 40 rows whose screen and image descriptor are rewritten to declare 150."""
    data = bytearray(saved(Image.fromarray(smooth_picture(200, 40)), "GIF", interlace=interlace))
    at = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # past the palette
    while data[at] == 0x21:  # extensions: label, then sub-blocks to a zero length
        at += 2
        while data[at]:
            at += data[at] + 1
        at += 1
    data[8:10] = data[at + 7 : at + 9] = struct.pack("<H", 150)
    return bytes(data)


def jpeg_cut_and_ended(progressive: bool = False) -> bytes:
    """Half a JPEG's scan data, closed with an end-of-image marker."""
    data = jpeg_bytes(smooth_picture(200, 150), progressive=progressive)
    return data[: len(data) // 2] + b"\xff\xd9"


def jpeg_declaring_more_rows() -> bytes:
    """A JPEG of 40 rows whose frame header declares 150."""
    data = bytearray(jpeg_bytes(smooth_picture(200, 40)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = struct.pack(">H", 150)
    return bytes(data)


def png_interlaced_short() -> bytes:
    """An interlaced PNG whose image data is cut to half and re-compressed as a whole stream."""
    full = saved(Image.fromarray(smooth_picture(120, 90)), "PNG", interlace=1)
    at, idat = 8, b""
    while at < len(full):
        length, kind = struct.unpack(">I4s", full[at : at + 8])
        if kind == b"IDAT":
            idat += full[at + 8 : at + 8 + length]
        at += 12 + length
    raw = zlib.decompress(idat)
    head = full[: full.index(b"IDAT") - 4]
    return head + png_chunk(b"IDAT", zlib.compress(raw[: len(raw) // 2])) + png_chunk(b"IEND", b"")


def short_data() -> list[tuple[str, Callable[[], bytes]]]:
    """Files whose image data stops short of their header, named."""
    return [
        ("png with missing rows", png_with_missing_rows),
        ("interlaced png with missing rows", png_interlaced_short),
        ("gif with missing rows", gif_with_missing_rows),
        ("interlaced gif with missing rows", lambda: gif_with_missing_rows(interlace=True)),
        ("jpeg cut and ended", jpeg_cut_and_ended),
        ("progressive jpeg cut and ended", lambda: jpeg_cut_and_ended(progressive=True)),
        ("jpeg declaring more rows", jpeg_declaring_more_rows),
    ]


def odd_pictures() -> list[tuple[str, Callable[[], bytes]]]:
    """Valid pictures of odd shapes and modes, named."""
    return [
        ("1x1 pixel", lambda: png_bytes(Image.new("RGB", (1, 1), (200, 30, 30)))),
        ("10000x10 strip", lambda: png_bytes(Image.new("RGB", (10_000, 10), (0, 90, 200)))),
        (
            "cmyk jpeg",
            lambda: saved(Image.fromarray(smooth_picture(40, 30)).convert("CMYK"), "JPEG"),
        ),
        ("16-bit png", lambda: png_bytes(Image.new("I;16", (40, 30), 40_000))),
    ]


@dataclass(frozen=True)
class Upload:
    """One request and its documented answer: status 200 (code None) or an error code."""

    name: str
    body: Callable[[], bytes]
    status: int
    code: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    multipart: bool = False
    field: str = "image"
    filename: str = "upload.jpg"
    content_type: str = "image/jpeg"


PICTURE = 200


def corpus(max_upload_bytes: int) -> list[Upload]:
    """The hostile and odd inputs, for a service whose upload limit is `max_upload_bytes`."""
    good = small_jpeg
    return [
        # Not images at all
        Upload("empty body", lambda: b"", 400, "invalid_image"),
        Upload("plain text", lambda: b"hello, this is not a photo", 415, "unsupported_format"),
        Upload(
            "html",
            lambda: b"<!doctype html><html><body><img src=x></body></html>",
            415,
            "unsupported_format",
        ),
        Upload(
            "svg",
            lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            415,
            "unsupported_format",
        ),
        Upload(
            "pdf",
            lambda: b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n%%EOF",
            415,
            "unsupported_format",
        ),
        Upload("zip holding a jpeg", zip_file, 415, "unsupported_format"),
        Upload(
            "windows icon",
            lambda: saved(Image.new("RGB", (16, 16)), "ICO"),
            415,
            "unsupported_format",
        ),
        Upload(
            "jpeg magic then noise",
            lambda: b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
            400,
            "invalid_image",
        ),
        # Broken images
        Upload(
            "truncated jpeg",
            lambda: truncated(jpeg_bytes(smooth_picture(200, 150))),
            400,
            "invalid_image",
        ),
        Upload(
            "truncated png",
            lambda: truncated(png_bytes(Image.fromarray(smooth_picture(200, 150)))),
            400,
            "invalid_image",
        ),
        Upload("truncated gif", lambda: truncated(animated("GIF"), 0.3), 400, "invalid_image"),
        Upload("png cut inside its header", lambda: b"\x89PNG\r\n\x1a\n\0\0", 400, "invalid_image"),
        *(Upload(name, body, 400, "invalid_image") for name, body in short_data()),
        # Decompression bombs: refused from the header, never decoded
        Upload(
            "png declaring 50000x50000", lambda: png_declaring(50_000, 50_000), 413, "too_large"
        ),
        Upload(
            "jpeg declaring 50000x50000", lambda: jpeg_declaring(50_000, 50_000), 413, "too_large"
        ),
        # Odd but valid pictures: each comes back as a picture
        *(Upload(name, body, PICTURE, params={"size": "64"}) for name, body in odd_pictures()),
        # The same odd pictures with a face asked for: no face, so the centre square
        *(
            Upload(f"{name}, crop=face", body, PICTURE, params={"crop": "face", "size": "64"})
            for name, body in odd_pictures()
        ),
        Upload("palette png with transparency", palette_with_transparency, PICTURE),
        Upload("animated gif", lambda: animated("GIF"), PICTURE),
        Upload("animated webp", lambda: animated("WEBP"), PICTURE),
        Upload("a video, which is a job's", lambda: clips.pan(4), 415, "unsupported_format"),
        Upload(
            "a truncated video",
            lambda: truncated(clips.pan(8), 0.5),
            415,
            "unsupported_format",
        ),
        Upload("huge exif block", huge_exif, PICTURE),
        Upload(
            "jpeg with a wrong name and content type",
            good,
            PICTURE,
            multipart=True,
            filename="holiday.gif",
            content_type="text/plain",
        ),
        # Malformed requests
        Upload(
            "multipart without the image field",
            good,
            400,
            "bad_parameter",
            multipart=True,
            field="photo",
        ),
        Upload(
            "body one byte over the upload limit",
            lambda: b"\xff" * (max_upload_bytes + 1),
            413,
            "too_large",
        ),
        # Bad parameters
        Upload("size=-1", good, 400, "bad_parameter", params={"size": "-1"}),
        Upload("size=10**9", good, 400, "bad_parameter", params={"size": str(10**9)}),
        Upload("size=abc", good, 400, "bad_parameter", params={"size": "abc"}),
        Upload(
            "style=../../etc/passwd",
            good,
            404,
            "unknown_style",
            params={"style": "../../etc/passwd"},
        ),
        Upload("format=exe", good, 400, "bad_parameter", params={"format": "exe"}),
        Upload(
            "quality=500", good, 400, "bad_parameter", params={"format": "jpeg", "quality": "500"}
        ),
        Upload("crop=circle", good, 400, "bad_parameter", params={"crop": "circle"}),
        Upload("unknown parameter", good, 400, "bad_parameter", params={"sharpen": "yes"}),
    ]


# -- mutations of a real photograph, for property-based tests ------------------------------------


def real_jpeg(width: int = 96, height: int = 72) -> bytes:
    """A small JPEG cut from one of the shared photographs (a made-up picture without them)."""
    from tests.conftest import SHARED_PHOTOS

    photos = sorted(SHARED_PHOTOS.glob("*.jpg"))
    picture = Image.open(photos[0]) if photos else Image.fromarray(smooth_picture(640, 480))
    crop = picture.convert("RGB").crop((200, 150, 200 + width * 4, 150 + height * 4))
    return saved(crop.resize((width, height)), "JPEG", quality=85)


def mutations(original: bytes) -> st.SearchStrategy[bytes]:
    """`original` with bytes overwritten, cut short, inserted into or deleted from."""
    n = len(original)

    def overwrite(edits: list[tuple[int, int]]) -> bytes:
        data = bytearray(original)
        for position, value in edits:
            data[position] = value
        return bytes(data)

    return st.one_of(
        st.lists(
            st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=24
        ).map(overwrite),
        st.integers(0, n - 1).map(lambda keep: original[:keep]),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=256)).map(
            lambda at: original[: at[0]] + at[1] + original[at[0] :]
        ),
        st.tuples(st.integers(0, n - 1), st.integers(1, 512)).map(
            lambda cut: original[: cut[0]] + original[cut[0] + cut[1] :]
        ),
    )
