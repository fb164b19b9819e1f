"""Pictures with faces, composed from a real photograph, and where their faces are.

The two women walking in front in ../shared/photos/kimono-street.jpg have faces of ~26 px; cut
out and enlarged 4x they are 100-125 px faces, blurred as a phone's zoom would blur them. The
face boxes were marked by hand on the photo (brows to chin, cheek to cheek). The same pictures
feed the detector comparison (benchmarks/faces.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from deployments.core.faces import Box
from tests.conftest import SHARED_PHOTOS

PHOTO = SHARED_PHOTOS / "kimono-street.jpg"
STREET = SHARED_PHOTOS / "cars-viaduct.jpg"  # no people: a background, and a no-face case
RIGHT_FACE = Box(641, 520, 26, 31)  # the woman in red, looking ahead
LEFT_FACE = Box(563, 514, 25, 31)  # the woman in blue, looking down
HEAD = (615, 488, 695, 580)  # the woman in red's head and shoulders, on the photo
ZOOM = 4


@dataclass(frozen=True)
class Portrait:
    """An upload, and its faces in the upright picture's pixels, the most prominent first."""

    name: str
    data: bytes
    size: tuple[int, int]  # upright width, height
    faces: tuple[Box, ...]


def portraits() -> list[Portrait]:
    """The test pictures: faces in several places and sizes, and pictures without a face."""
    return [pair(), corner(), corner(rotated=True), small(), two_sizes(), *faceless()]


def pair() -> Portrait:
    """The two women, enlarged: two faces of one size; the one in red is nearer the centre."""
    left, top, right, bottom = 500, 470, 740, 650
    picture = _zoomed(_photo().crop((left, top, right, bottom)), ZOOM)
    faces = tuple(_moved(face, -left, -top, ZOOM) for face in (RIGHT_FACE, LEFT_FACE))
    return Portrait("pair", _jpeg(picture), picture.size, faces)


def corner(*, rotated: bool = False) -> Portrait:
    """One face in the bottom-right corner of a wide street scene; `rotated`: the JPEG stores
    it turned and says so in EXIF, as phones do."""
    canvas = _street(1600, 900)
    head = _head(ZOOM)
    at = (canvas.width - head.width, canvas.height - head.height)
    canvas.paste(head, at)
    face = _face_of_head(ZOOM, at)
    if not rotated:
        return Portrait("corner", _jpeg(canvas), canvas.size, (face,))
    # Orientation 6: the stored pixels are the upright picture turned 90 degrees anticlockwise.
    stored = canvas.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return Portrait("rotated", _jpeg(stored, exif=exif.tobytes()), canvas.size, (face,))


def small() -> Portrait:
    """A face of 1/16 of the picture's long side, off-centre in a large picture."""
    canvas = _street(2000, 1500)
    head = _head(ZOOM)
    at = (300, 200)
    canvas.paste(head, at)
    face = _face_of_head(ZOOM, at)
    return Portrait("small", _jpeg(canvas), canvas.size, (face,))


def two_sizes() -> Portrait:
    """A large face at the edge and a face half its size at the centre: the large one wins."""
    canvas = _street(1400, 900)
    big, little = _head(ZOOM), _head(ZOOM // 2)
    big_at = (0, 300)
    little_at = ((canvas.width - little.width) // 2, (canvas.height - little.height) // 2)
    canvas.paste(big, big_at)
    canvas.paste(little, little_at)
    faces = (_face_of_head(ZOOM, big_at), _face_of_head(ZOOM // 2, little_at))
    return Portrait("two sizes", _jpeg(canvas), canvas.size, faces)


def group() -> Portrait:
    """A wide street with four faces of several sizes, the smallest 1/40 of the long side and
    the largest with its head at the very left edge."""
    canvas = _street(1600, 900)
    faces = []
    for height, centre in ((40, (1150, 250)), (60, (800, 620)), (90, (420, 300)), (150, (0, 560))):
        zoom = height / RIGHT_FACE.height
        head = _zoomed_by(_photo().crop(HEAD), zoom)
        inside = _moved(RIGHT_FACE, -HEAD[0], -HEAD[1], 1)
        left = max(round(centre[0] - (inside.x + inside.width / 2) * zoom), 0)
        top = round(centre[1] - (inside.y + inside.height / 2) * zoom)
        canvas.paste(head, (left, top))
        box = Box(*(round(v * zoom) for v in (inside.x, inside.y, inside.width, inside.height)))
        faces.append(_moved(box, left, top, 1))
    faces.sort(key=lambda face: -face.height)
    return Portrait("group", _jpeg(canvas), canvas.size, tuple(faces))


def faceless() -> list[Portrait]:
    """Pictures with no face: a street without people, its sky and road, a flat colour."""
    street = _open(STREET)
    flat = Image.new("RGB", (800, 600), (200, 120, 90))
    return [
        Portrait("street", _jpeg(street), street.size, ()),
        Portrait("flat", _jpeg(flat), flat.size, ()),
    ]


def _moved(box: Box, dx: int, dy: int, zoom: int) -> Box:
    """`box` shifted by (dx, dy), then scaled by `zoom`."""
    return Box((box.x + dx) * zoom, (box.y + dy) * zoom, box.width * zoom, box.height * zoom)


def _face_of_head(zoom: int, at: tuple[int, int]) -> Box:
    """Where the face is once the head, enlarged `zoom` times, is pasted at `at`."""
    face = _moved(RIGHT_FACE, -HEAD[0], -HEAD[1], zoom)
    return _moved(face, at[0], at[1], 1)


@cache
def _photo() -> Image.Image:
    return _open(PHOTO)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def _head(zoom: int) -> Image.Image:
    return _zoomed(_photo().crop(HEAD), zoom)


def _zoomed(picture: Image.Image, zoom: int) -> Image.Image:
    return _zoomed_by(picture, zoom)


def _zoomed_by(picture: Image.Image, zoom: float) -> Image.Image:
    size = (round(picture.width * zoom), round(picture.height * zoom))
    return picture.resize(size, Image.Resampling.BICUBIC)


def _street(width: int, height: int) -> Image.Image:
    return _open(STREET).resize((width, height), Image.Resampling.BICUBIC)


def _jpeg(picture: Image.Image, **save: object) -> bytes:
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=92, **save)
    return out.getvalue()
