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
