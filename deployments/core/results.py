"""What the service hands back: a stylized picture with its cache outcome, and a style's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .options import StylizeOptions

# hit: stored already; shared: an identical request in flight computed it; miss: computed for it.
CacheOutcome = Literal["hit", "miss", "shared"]


@dataclass(frozen=True)
class Stylized:
    """The answer to one stylize request."""

    body: bytes  # the encoded picture, in `options.format`
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
