"""What the service hands back: a stylized picture with its cache outcome, and a style's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .faces import Box
from .imaging import Cut
from .options import StylizeOptions

# hit: stored already; shared: an identical request in flight computed it; miss: computed for it.
CacheOutcome = Literal["hit", "miss", "shared"]


@dataclass(frozen=True)
class Picture:
    """A result as the caches keep it: the encoded picture, where it was cut from, and where
    the faces drawn in a `face_style` are (None where none was asked for)."""

    body: bytes  # in the request's `format`
    cut: Cut
    faces: tuple[Box, ...] | None = None

    def __len__(self) -> int:  # what it weighs in a byte-bounded store
        return len(self.body)

    def faces_header(self) -> str | None:
        """Its `X-Faces` header's value (see `faces_header`), if a face style was asked for."""
        return None if self.faces is None else faces_header(self.faces)


def faces_header(squares: tuple[Box, ...]) -> str:
    """The `X-Faces` header's value: `2 10,20,96,96 300,40,64,64`, the count first."""
    return " ".join([str(len(squares)), *(f"{b.x},{b.y},{b.width},{b.height}" for b in squares)])


def parse_faces(header: str) -> tuple[Box, ...]:
    """The squares an `X-Faces` header lists."""
    count, *squares = header.split(" ")
    found = tuple(Box(*(int(n) for n in square.split(","))) for square in squares)
    if int(count) != len(found):
        raise ValueError(f"not a faces header: {header!r}")
    return found


@dataclass(frozen=True)
class Stylized:
    """The answer to one stylize request."""

    picture: Picture
    key: str  # the cache key: what makes two requests the same
    cache: CacheOutcome
    options: StylizeOptions


@dataclass(frozen=True)
class StyleStatus:
    """What `/v1/styles` and `weights list` report about one style."""

    name: str
    description: str
    ready: bool
    verified: bool = False
    sha1: str | None = None
    error: str | None = None
