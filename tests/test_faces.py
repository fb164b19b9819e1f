"""`crop=face` in-process: the detector on real faces, the portrait square, the fallbacks."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from PIL import Image

from deployments.core import imaging
from deployments.core.faces import Box, centre_square, most_prominent, portrait_box
from tests.hostile import odd_pictures
from tests.portraits import PHOTO, Portrait, portraits

LIMITS = {"max_pixels": 50_000_000}

needs_photo = pytest.mark.skipif(not PHOTO.exists(), reason=f"needs {PHOTO} (../shared)")


@pytest.fixture(scope="module")
def pictures() -> dict[str, Portrait]:
    return {p.name: p for p in portraits()}


def centred_on(box: Box, face: Box, tolerance: float = 0.15) -> bool:
    """`box` holds all of `face`, and their centres differ by under `tolerance` of the box."""
    holds = (
        box.x <= face.x
        and box.y <= face.y
        and face.x + face.width <= box.x + box.width
        and face.y + face.height <= box.y + box.height
    )
    (bx, by), (fx, fy) = box.centre, face.centre
    return holds and max(abs(bx - fx), abs(by - fy)) <= tolerance * box.width


@needs_photo
@pytest.mark.parametrize("name", ["pair", "corner", "rotated", "small", "two sizes"])
def test_the_crop_is_a_square_centred_on_the_most_prominent_face(
    pictures: dict[str, Portrait], name: str
) -> None:
    picture = pictures[name]
    pixels, cut = imaging.load(picture.data, size=256, crop="face", **LIMITS)
    assert cut.how == "face", cut
    assert cut.box.width == cut.box.height
    assert centred_on(cut.box, picture.faces[0]), (cut.box, picture.faces[0])
    # About 1.5 times the face: room for hair and chin, not the whole scene.
    assert 1.2 <= cut.box.width / picture.faces[0].height <= 2.0
    side = min(256, cut.box.width)  # shrunk to `size`, never enlarged, as every crop
    assert pixels.shape == (side, side, 3)


@needs_photo
def test_a_face_rotated_by_exif_is_found_upright(pictures: dict[str, Portrait]) -> None:
    stored = Image.open(io.BytesIO(pictures["rotated"].data))
    assert stored.size == (900, 1600)  # the file holds it turned
    _, upright = imaging.load(pictures["corner"].data, size=256, crop="face", **LIMITS)
    _, turned = imaging.load(pictures["rotated"].data, size=256, crop="face", **LIMITS)
    assert turned.how == "face"
    assert abs(turned.box.x - upright.box.x) <= 8 and abs(turned.box.y - upright.box.y) <= 8


@needs_photo
@pytest.mark.parametrize("name", ["street", "flat"])
def test_no_face_falls_back_to_the_centre_square(pictures: dict[str, Portrait], name: str) -> None:
    picture = pictures[name]
    pixels, cut = imaging.load(picture.data, size=256, crop="face", **LIMITS)
    assert cut.how == "centre"
    assert cut.box == centre_square(*picture.size)
    assert pixels.shape == (256, 256, 3)


@needs_photo
def test_the_face_crop_keeps_the_resolution_of_a_large_photo(
    pictures: dict[str, Portrait],
) -> None:
    # The face is found on a small copy, but the crop is cut from the full picture.
    picture = pictures["small"]
    pixels, cut = imaging.load(picture.data, size=160, crop="face", **LIMITS)
    assert cut.box.width > 160 and pixels.shape == (160, 160, 3)
    assert pixels.std() > 20  # a picture, not a blur of a few upscaled pixels


@pytest.mark.parametrize(("name", "body"), odd_pictures())
def test_odd_pictures_get_the_centre_crop(name: str, body: Callable[[], bytes]) -> None:
    data = body()
    width, height = Image.open(io.BytesIO(data)).size
    pixels, cut = imaging.load(data, size=64, crop="face", **LIMITS)
    assert cut.how == "centre" and cut.box == centre_square(width, height)
    side = min(64, width, height)
    assert pixels.shape == (side, side, 3)


def test_the_largest_face_wins_and_then_the_most_central() -> None:
    big_edge, small_centre = Box(0, 0, 100, 100), Box(450, 450, 50, 50)
    assert most_prominent([small_centre, big_edge], 1000, 1000) == big_edge
    edge, centre = Box(0, 0, 100, 100), Box(450, 450, 102, 102)  # about one size
    assert most_prominent([edge, centre], 1000, 1000) == centre
    assert most_prominent([], 1000, 1000) is None


def test_the_portrait_square_is_centred_on_the_whole_face_and_stays_inside() -> None:
    detected = Box(400, 400, 100, 120)  # brows to below the mouth: the chin is lower
    box = portrait_box(detected, 1000, 1000)
    assert box.width == box.height == 180
    assert box.centre == (450, 472)  # 0.1 box heights below the detector's centre
    corner = portrait_box(Box(0, 900, 100, 100), 1000, 1000)
    assert (corner.x, corner.y + corner.height) == (0, 1000)  # moved in, not cut
    tiny = portrait_box(Box(10, 10, 80, 80), 100, 60)
    assert tiny.width == tiny.height == 60 and tiny.y == 0
