"""The example pictures of `examples_dir`: read once at start-up, checked, and bounded."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from . import imaging
from .errors import AnimeGANError

log = logging.getLogger("ray.serve")

MAX_EXAMPLES = 48  # a gallery, not an album: each ingress replica holds them all in memory
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # what may appear in /v1/examples/{name}
_MEDIA_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png"}
_MEDIA_TYPES |= {"WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp", "TIFF": "image/tiff"}


@dataclass(frozen=True)
class Example:
    """One example picture, served at `/v1/examples/{name}`."""

    name: str
    data: bytes
    media_type: str


def load_examples(folder: Path, *, max_bytes: int, max_pixels: int) -> list[Example]:
    """The pictures in `folder` by name; files that are not pictures within the limits, or whose
    names do not fit a URL, are logged and left out."""
    examples: list[Example] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if len(examples) == MAX_EXAMPLES:
            log.warning("examples_dir holds over %d pictures; the rest are left out", MAX_EXAMPLES)
            break
        if not NAME.fullmatch(path.name):
            log.warning("example %r left out: name it with letters, digits, . _ -", path.name)
            continue
        data = path.read_bytes()
        try:
            if len(data) > max_bytes:
                raise AnimeGANError(f"{len(data):,} bytes, over the upload limit")
            image = imaging.probe(data, max_pixels=max_pixels)
        except AnimeGANError as exc:
            log.warning("example %r left out: %s", path.name, exc.message)
            continue
        examples.append(Example(path.name, data, _MEDIA_TYPES[str(image.format)]))
    return examples
