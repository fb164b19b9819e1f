"""The options of one stylize request, validated and normalized against the settings.

Normalizing matters for caching: two requests that mean the same thing (quality given for a
PNG, `size` above the image's own size) must produce the same options and so the same key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

from .errors import BadParameter, UnknownStyle
from .media import FORMATS, Kind
from .settings import Crop, OutputFormat, Settings

PARAMETERS = ("style", "size", "crop", "format", "quality", "face_style")
# As `style` beside a `face_style`: the photo kept, only its faces drawn. As `size`: the
# upload's own long side, within max_size.
ORIGINAL = "original"


@dataclass(frozen=True)
class StylizeOptions:
    """What to do with one image: which style, how big, which crop, which output encoding."""

    style: str
    size: int
    crop: Crop
    format: OutputFormat
    quality: int | None  # None where the format takes none (PNG, GIF, the videos' own)
    face_style: str | None = None  # every face found drawn again in this style, blended in

    @classmethod
    def parse(
        cls, params: Mapping[str, object], settings: Settings, kind: Kind = "image"
    ) -> StylizeOptions:
        """Options from request parameters (strings or values) for an upload of `kind`;
        unknown names are refused."""
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise BadParameter(
                f"unknown parameter {unknown[0]!r}; the parameters are {', '.join(PARAMETERS)}"
            )
        return cls.build(
            settings,
            style=_text(params, "style"),
            size=ORIGINAL if params.get("size") == ORIGINAL else _integer(params, "size"),
            crop=_text(params, "crop"),
            format=_text(params, "format"),
            quality=_integer(params, "quality"),
            face_style=_text(params, "face_style"),
            kind=kind,
        )

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        style: str | None = None,
        size: int | str | None = None,
        crop: str | None = None,
        format: str | None = None,
        quality: int | None = None,
        face_style: str | None = None,
        kind: Kind = "image",
    ) -> StylizeOptions:
        """Validated options for an upload of `kind`; None means the default (for a picture
        the setting's, for a clip its own kind: a GIF stays a GIF, a video becomes MP4)."""
        style = settings.default_style if style is None else style
        if face_style is not None:
            _check_style(face_style, settings, "face_style")
            if kind != "image":
                raise BadParameter("face_style draws the faces of a picture, not of a clip")
        if style != ORIGINAL or face_style is None:
            _check_style(style, settings, "style")
        size = _size(settings, size)
        crop = crop or "none"
        if crop not in get_args(Crop):
            raise BadParameter(
                f"crop must be one of {', '.join(get_args(Crop))}, not {crop[:32]!r}"
            )
        formats = FORMATS[kind]
        default = settings.default_format if kind == "image" else formats[0]
        format = (format or default).lower()
        format = "jpeg" if format == "jpg" else format
        if format not in formats:
            what = "a picture" if kind == "image" else f"an upload of kind {kind}"
            raise BadParameter(
                f"format for {what} must be one of {', '.join(formats)}, not {format[:32]!r}"
            )
        if format not in ("jpeg", "webp"):
            quality = None
        else:
            quality = settings.default_quality if quality is None else quality
            if not 1 <= quality <= 100:
                raise BadParameter(f"quality must be between 1 and 100, not {quality}")
        return cls(style, size, crop, format, quality, face_style)  # type: ignore[arg-type]


def _size(settings: Settings, size: int | str | None) -> int:
    if size is None:
        return settings.default_size
    if size == ORIGINAL:  # the upload's own long side: never enlarged, so max_size's result
        return settings.max_size
    if not isinstance(size, int):
        raise BadParameter(f"size must be a whole number or {ORIGINAL!r}, not {size!r:.32}")
    if not settings.min_size <= size <= settings.max_size:
        raise BadParameter(
            f"size must be between {settings.min_size} and {settings.max_size} pixels, not {size}"
        )
    return size


def _check_style(style: str, settings: Settings, name: str) -> None:
    if style not in settings.styles:
        also = f" (or {ORIGINAL!r} beside a face_style)" if name == "style" else ""
        raise UnknownStyle(
            f"unknown {name} {style[:64]!r}; the styles are {', '.join(settings.styles)}{also}"
        )


def _text(params: Mapping[str, object], name: str) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    return str(value)


def _integer(params: Mapping[str, object], name: str) -> int | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise BadParameter(f"{name} must be a whole number, not {value[:32]!r}") from None
