"""Finding the face for `crop=face`, and the square a portrait style wants around it.

The detector is dlib's HOG frontal-face detector (from the `dlib-bin` wheel): its model is
compiled into the library, so nothing is downloaded, and it finds faces down to about 40 px
on the small grey copy it is given. Why this one: the comparison in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

# The detection copy's long side: a face of 1/16 of the picture's long side is ~40 px there.
# 512 missed such a face; 800 costs 1.5x as much (benchmarks/RESULTS.md, "Finding the face").
DETECT_SIDE = 640
# The copy that small faces are looked for on: a face of 1/40 of the long side is 40 px there,
# 80 px doubled, dlib's window. 1280 missed such a face; the cost is ~6x DETECT_SIDE's, 15% of
# one 512 px inference's CPU time (benchmarks/RESULTS.md, "Small faces").
SMALL_FACES_SIDE = 1600
MAX_ENLARGE = 2.0  # a smaller upload's copy for small faces is enlarged at most this much
UPSAMPLE = 1  # dlib looks at the copy doubled too: faces from ~40 px rather than ~80 px
# The portrait square, relative to the detector's box: this much wider, and centred this far
# below the box's centre (in box heights). The box runs from the brows to below the mouth, so
# the chin is ~0.15 box heights lower (measured on tests/portraits.py): centred on the whole
# face, the square has room for the hair above and the chin below, as in the aligned crops the
# portrait styles were trained on, with more room above the eyes than below the chin.
PORTRAIT_SCALE = 1.5
PORTRAIT_DROP = 0.1
SAME_SIZE = 0.8  # faces with at least this share of the largest face's area count as as large

_local = threading.local()


@dataclass(frozen=True)
class Box:
    """A rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.width / 2, self.y + self.height / 2

    def scaled(self, factor: float) -> Box:
        return Box(*(round(v * factor) for v in (self.x, self.y, self.width, self.height)))


def find_faces(gray: np.ndarray) -> list[Box]:
    """Every frontal face in a (H, W) uint8 picture, as boxes in its pixels."""
    found = _detector()(gray, UPSAMPLE)
    return [Box(r.left(), r.top(), r.width(), r.height()) for r in found]


def largest(faces: list[Box], count: int) -> list[Box]:
    """The `count` largest faces, largest first."""
    return sorted(faces, key=lambda face: face.width * face.height, reverse=True)[:count]


def most_prominent(faces: list[Box], width: int, height: int) -> Box | None:
    """The largest face; among faces of about its size, the one nearest the centre."""
    if not faces:
        return None
    largest = max(face.width * face.height for face in faces)
    # The detector's boxes of one face size vary by ~10% in side: "about its size".
    contenders = [face for face in faces if face.width * face.height >= SAME_SIZE * largest]

    def off_centre(face: Box) -> float:
        cx, cy = face.centre
        return (cx - width / 2) ** 2 + (cy - height / 2) ** 2

    return min(contenders, key=off_centre)


def portrait_box(face: Box, width: int, height: int) -> Box:
    """The square around `face` that a portrait style wants, moved (not cut) to fit inside."""
    return portrait_box_in(face, Box(0, 0, width, height))


def portrait_box_in(face: Box, area: Box) -> Box:
    """The portrait square around `face`, moved (not cut) to fit inside `area`."""
    side = min(round(max(face.width, face.height) * PORTRAIT_SCALE), area.width, area.height)
    cx, cy = face.centre
    cy += PORTRAIT_DROP * face.height
    left = min(max(round(cx - side / 2), area.x), area.x + area.width - side)
    top = min(max(round(cy - side / 2), area.y), area.y + area.height - side)
    return Box(left, top, side, side)


def holds(area: Box, point: tuple[float, float]) -> bool:
    x, y = point
    return area.x <= x < area.x + area.width and area.y <= y < area.y + area.height


def centre_square(width: int, height: int) -> Box:
    """The largest centred square: the crop of `crop=square`, and `face` with none found."""
    side = min(width, height)
    return Box((width - side) // 2, (height - side) // 2, side, side)


def _detector() -> Any:  # dlib ships no type hints
    """One detector per thread (dlib's keeps scratch buffers); built once, ~0.2 s."""
    detector = getattr(_local, "detector", None)
    if detector is None:
        import dlib  # here, so processes that never crop faces never load it

        detector = _local.detector = dlib.get_frontal_face_detector()
    return detector
