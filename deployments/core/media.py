"""What an upload is: a picture, an animated picture or a video, told from its first bytes.

An upload is its bytes, or for a video larger than the picture limit the file it was spooled
to (never held whole in a process's heap). The kind decides the route it may take, the
formats its result may have and the code that reads it: Pillow for pictures and animations
(core/imaging.py, core/animation.py), FFmpeg through PyAV for videos (core/video.py).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Literal

from PIL import Image

from .errors import UnsupportedFormat
from .settings import OutputFormat

Upload = bytes | Path
# image: a still picture; animated-*: a GIF, WebP or PNG (APNG) of several frames; video.
Kind = Literal["image", "animated-gif", "animated-webp", "animated-png", "video"]

HEAD_BYTES = 400  # enough for every signature below (MPEG-TS: three 188-byte packets)
CHUNK_BYTES = 1 << 20

# The formats each kind's result may take; the first is its default (an image's is a setting).
FORMATS: dict[Kind, tuple[OutputFormat, ...]] = {
    "image": ("png", "jpeg", "webp"),
    "animated-gif": ("gif", "webp", "png", "mp4", "webm"),
    "animated-webp": ("webp", "gif", "png", "mp4", "webm"),
    "animated-png": ("png", "gif", "webp", "mp4", "webm"),
    "video": ("mp4", "webm"),
}
MEDIA_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
    "webm": "video/webm",
}
ANIMATABLE = {"GIF": "animated-gif", "WEBP": "animated-webp", "PNG": "animated-png"}


def head_of(upload: Upload) -> bytes:
    if isinstance(upload, bytes):
        return upload[:HEAD_BYTES]
    with upload.open("rb") as file:
        return file.read(HEAD_BYTES)


def is_video(head: bytes) -> bool:
    """Whether `head` starts a container FFmpeg reads video from: MP4/MOV/3GP, Matroska/WebM,
    AVI, MPEG-TS/PS, FLV or Ogg."""
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
        or head.startswith((b"\x1a\x45\xdf\xa3", b"FLV", b"OggS", b"\x00\x00\x01\xba"))
        or (head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"))
        or head[0:1] == head[188:189] == head[376:377] == b"\x47"  # MPEG-TS packets
    )


def kind_of(upload: Upload) -> Kind:
    """The upload's kind from its header (a picture's errors are left to its decoder)."""
    if is_video(head_of(upload)):
        return "video"
    if not isinstance(upload, bytes):
        raise UnsupportedFormat("only a video is accepted over the picture size limit")
    try:
        with Image.open(io.BytesIO(upload), formats=tuple(ANIMATABLE)) as image:
            if getattr(image, "n_frames", 1) > 1:
                return ANIMATABLE[image.format or ""]  # type: ignore[return-value]
    except Exception:  # not an animatable format, or unreadable: the picture path says which
        pass
    return "image"


def content_digest(upload: Upload) -> bytes:
    """SHA-256 of the upload's bytes, a spooled file read in chunks."""
    if isinstance(upload, bytes):
        return hashlib.sha256(upload).digest()
    digest = hashlib.sha256()
    with upload.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


def size_of(upload: Upload) -> int:
    return len(upload) if isinstance(upload, bytes) else upload.stat().st_size


def media_type_of(encoded: bytes) -> str:
    """The media type of a result we encoded, from its first bytes."""
    if encoded.startswith(b"\x89PNG"):
        return MEDIA_TYPES["png"]
    if encoded.startswith(b"\xff\xd8"):
        return MEDIA_TYPES["jpeg"]
    if encoded.startswith(b"GIF8"):
        return MEDIA_TYPES["gif"]
    if encoded[4:8] == b"ftyp":
        return MEDIA_TYPES["mp4"]
    if encoded.startswith(b"\x1a\x45\xdf\xa3"):
        return MEDIA_TYPES["webm"]
    return MEDIA_TYPES["webp"]
