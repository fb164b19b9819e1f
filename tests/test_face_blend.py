"""Every face of a group photo found and cut, and the blend that puts drawn faces back."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deployments.core import face_blend, faces, imaging
from deployments.core.faces import Box
from tests.conftest import smooth_picture
from tests.portraits import PHOTO, faceless, group

LIMITS = {"max_pixels": 50_000_000}

needs_photo = pytest.mark.skipif(not PHOTO.exists(), reason=f"needs {PHOTO} (../shared)")


def holds(square: Box, face: Box) -> bool:
    return (
        square.x <= face.x
        and square.y <= face.y
        and face.x + face.width <= square.x + square.width
        and face.y + face.height <= square.y + square.height
    )


@needs_photo
def test_every_face_of_a_group_is_cut_down_to_a_fortieth_of_the_long_side() -> None:
    picture = group()
    assert picture.faces[-1].height == picture.size[0] // 40  # the smallest face
    pixels, cut = imaging.load(picture.data, size=800, crop="none", **LIMITS)
    found = imaging.face_cuts(
        picture.data, cut, (pixels.shape[1], pixels.shape[0]), side=256, max_faces=16, **LIMITS
    )
    assert len(found) == len(picture.faces)
    into = pixels.shape[1] / picture.size[0]
    for face, cut_face in zip(picture.faces, found, strict=True):  # both largest first
        assert cut_face.pixels.shape == (256, 256, 3)
        square = cut_face.square
        assert square.width == square.height
        assert square.x >= 0 and square.x + square.width <= pixels.shape[1]
        assert square.y >= 0 and square.y + square.height <= pixels.shape[0]
        assert holds(square, face.scaled(into)), (square, face.scaled(into))


@needs_photo
def test_only_the_largest_faces_are_kept_and_none_where_there_is_none() -> None:
    picture = group()
    pixels, cut = imaging.load(picture.data, size=400, crop="none", **LIMITS)
    size = (pixels.shape[1], pixels.shape[0])
    two = imaging.face_cuts(picture.data, cut, size, side=64, max_faces=2, **LIMITS)
    assert [f.square.width for f in two] == sorted((f.square.width for f in two), reverse=True)
    into = size[0] / picture.size[0]
    assert holds(two[0].square, picture.faces[0].scaled(into))
    assert holds(two[1].square, picture.faces[1].scaled(into))
    street = faceless()[0]
    pixels, cut = imaging.load(street.data, size=400, crop="none", **LIMITS)
    size = (pixels.shape[1], pixels.shape[0])
    assert imaging.face_cuts(street.data, cut, size, side=64, max_faces=16, **LIMITS) == []


@needs_photo
def test_with_crop_face_small_faces_are_looked_for_where_no_large_one_shows() -> None:
    picture = group()
    # The group's right part: its smallest face alone, 1/22 of the long side, too small for
    # the small copy that large faces are found on.
    right = Image.open(io.BytesIO(picture.data)).crop((1000, 0, 1600, 900))
    out = io.BytesIO()
    right.save(out, "JPEG", quality=92)
    _, cut = imaging.load(out.getvalue(), size=256, crop="face", **LIMITS)
    assert cut.how == "face", cut
    face = picture.faces[-1]
    assert holds(cut.box, Box(face.x - 1000, face.y, face.width, face.height)), cut
    _, whole = imaging.load(picture.data, size=256, crop="face", **LIMITS)
    assert holds(whole.box, picture.faces[0])  # the largest of several


def test_the_mask_is_one_on_the_face_and_nothing_at_every_edge() -> None:
    for side in (7, 64, 301):
        weights = face_blend.mask(side)[..., 0]
        assert weights.shape == (side, side)
        edge = np.concatenate([weights[0], weights[-1], weights[:, 0], weights[:, -1]])
        assert edge.max() < 1e-3
    weights = face_blend.mask(300)[..., 0]
    assert weights[135, 150] == pytest.approx(1.0)  # the face's centre, a little above the middle
    steps = np.abs(np.diff(weights, axis=0)).max(), np.abs(np.diff(weights, axis=1)).max()
    assert max(steps) < 0.05  # the weight changes by under 5% between neighbours


def test_outside_the_faces_the_picture_is_left_as_it_was_and_no_step_shows() -> None:
    picture = smooth_picture(200, 120, seed=1)
    face = np.full((64, 64, 3), 255, np.uint8)  # as far from the picture's tones as can be
    square = Box(100, 30, 60, 60)
    out = face_blend.compose(picture, [(square, face)])
    weights = face_blend.mask(60)[..., 0]
    inside = np.zeros(picture.shape[:2], bool)
    inside[30:90, 100:160] = weights > 0
    assert np.array_equal(out[~inside], picture[~inside])
    assert out[30 + 27, 100 + 30].min() >= 250  # the face's centre is the face
    # Neighbouring pixels differ no more than the picture's own do plus the weight's largest
    # step between neighbours times the change of tone: no edge where the mask ends.
    step = np.abs(np.diff(weights, axis=1)).max()
    jumps = np.abs(np.diff(out.astype(int), axis=1))[30:90, 99:160].max()
    own = np.abs(np.diff(picture.astype(int), axis=1))[30:90, 99:160].max()
    assert jumps <= own + step * 255 + 1


def test_larger_faces_are_drawn_over_smaller_ones() -> None:
    picture = np.zeros((100, 100, 3), np.uint8)
    big = (Box(10, 10, 80, 80), np.full((80, 80, 3), 200, np.uint8))
    small = (Box(30, 30, 40, 40), np.full((40, 40, 3), 100, np.uint8))
    out = face_blend.compose(picture, [big, small])
    assert out[46, 50, 0] == 200  # the big face's core covers the small one
    assert face_blend.face_side("celeba_distill") == 256
    assert face_blend.face_side("face_paint_512_v2") == 512


def test_only_the_small_faces_copy_is_enlarged_and_at_most_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[tuple[int, ...]] = []

    def look(gray: np.ndarray) -> list[Box]:  # what the detector is shown, not what it finds
        seen.append(gray.shape)
        return []

    monkeypatch.setattr(faces, "find_faces", look)
    small = Image.new("RGB", (400, 300))
    imaging.detect(small, 400, 300, side=faces.DETECT_SIDE)  # never enlarged
    imaging.detect(small, 400, 300)  # for small faces: enlarged, at most twice
    reduced = Image.new("RGB", (1000, 750))  # a 4000 px upload decoded at a reduced scale
    imaging.detect(reduced, 4000, 3000)
    assert seen == [(300, 400), (600, 800), (1200, 1600)]
