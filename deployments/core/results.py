"""What the service hands back: a stylized picture with its cache outcome, and a style's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .imaging import Cut
from .options import StylizeOptions

# hit: stored already; shared: an identical request in flight computed it; miss: computed for it.
CacheOutcome = Literal["hit", "miss", "shared"]


@dataclass(frozen=True)
class Picture:
    """A result as the caches keep it: the encoded picture and where it was cut from."""

    body: bytes  # in the request's `format`
    cut: Cut

    def __len__(self) -> int:  # what it weighs in a byte-bounded store
        return len(self.body)


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
