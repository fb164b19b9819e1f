from __future__ import annotations

import pytest

from deployments.core.errors import BadParameter, UnknownStyle
from deployments.core.options import StylizeOptions
from deployments.core.settings import Settings

SETTINGS = Settings()


def test_empty_parameters_take_the_defaults() -> None:
    options = StylizeOptions.parse({}, SETTINGS)
    assert options == StylizeOptions("face_paint_512_v2", 512, "none", "png", None)


def test_parameters_arrive_as_strings_and_are_normalized() -> None:
    options = StylizeOptions.parse(
        {"style": "paprika", "size": "256", "crop": "square", "format": "JPG", "quality": "80"},
        SETTINGS,
    )
    assert options == StylizeOptions("paprika", 256, "square", "jpeg", 80)


def test_quality_is_dropped_for_png_so_equal_requests_share_a_key() -> None:
    assert StylizeOptions.parse({"quality": "50"}, SETTINGS) == StylizeOptions.parse({}, SETTINGS)


@pytest.mark.parametrize(
    "params, error, fragment",
    [
        ({"style": "../../etc/passwd"}, UnknownStyle, "unknown style"),
        ({"size": "-1"}, BadParameter, "size must be between"),
        ({"size": str(10**9)}, BadParameter, "size must be between"),
        ({"size": "big"}, BadParameter, "whole number"),
        ({"crop": "circle"}, BadParameter, "crop must be one of"),
        ({"format": "exe"}, BadParameter, "format for a picture must be one of"),
        ({"format": "jpeg", "quality": "500"}, BadParameter, "quality must be between"),
        ({"colour": "red"}, BadParameter, "unknown parameter 'colour'"),
    ],
)
def test_bad_parameters_are_refused_with_a_readable_reason(
    params: dict, error: type, fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        StylizeOptions.parse(params, SETTINGS)


def test_a_face_style_names_a_configured_style_and_original_keeps_the_photo() -> None:
    options = StylizeOptions.parse({"style": "original", "face_style": "celeba_distill"}, SETTINGS)
    assert (options.style, options.face_style) == ("original", "celeba_distill")
    with pytest.raises(UnknownStyle, match="unknown face_style 'nope'"):
        StylizeOptions.parse({"face_style": "nope"}, SETTINGS)
    with pytest.raises(UnknownStyle, match="beside a face_style"):
        StylizeOptions.parse({"style": "original"}, SETTINGS)
    with pytest.raises(BadParameter, match="not of a clip"):
        StylizeOptions.parse({"face_style": "paprika"}, SETTINGS, "animated-gif")


def test_size_original_is_the_largest_size_which_never_enlarges() -> None:
    assert StylizeOptions.parse({"size": "original"}, SETTINGS).size == SETTINGS.max_size == 2048
    assert StylizeOptions.build(SETTINGS, size="original") == StylizeOptions.parse(
        {"size": "2048"}, SETTINGS
    )
    with pytest.raises(BadParameter, match="whole number or 'original'"):
        StylizeOptions.build(SETTINGS, size="huge")
