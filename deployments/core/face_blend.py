"""Faces drawn in a face style, blended back into the whole stylized picture.

Each face's portrait square was stylized on its own; it goes back under a mask over the face
and hair: an ellipse in the square's upper middle (the square holds the face a little above its
centre, and the hair above that), 1 inside, falling to 0 along a raised cosine well before the
square's edge. The weight and its slope are 0 where the ramp ends, so no edge shows, and nothing
outside the ellipse changes.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from .faces import Box

# The sides the portrait styles were trained at; a face is stylized at its style's.
FACE_SIDES = {"celeba_distill": 256}
DEFAULT_FACE_SIDE = 512  # face_paint_512_v1/v2's, and any other style's
# The mask's ellipse in the square (fractions of its side): centre, radii, and where (as a
# share of the radius) the ramp from 1 down to 0 begins.
CENTRE = (0.5, 0.47)
RADII = (0.46, 0.46)
RAMP_FROM = 0.7


def face_side(style: str) -> int:
    """The side a face is stylized at in `style`."""
    return FACE_SIDES.get(style, DEFAULT_FACE_SIDE)


@lru_cache(maxsize=64)  # the faces of a few pictures at a time; a 2048 px one is 16 MB
def mask(side: int) -> np.ndarray:
    """The (side, side, 1) float32 weights of a face square: 1 on the face, 0 at every edge."""
    centres = np.linspace(0.0, 1.0, side, dtype=np.float32)  # the edge pixels at 0 and 1
    dx = (centres[None, :] - CENTRE[0]) / RADII[0]
    dy = (centres[:, None] - CENTRE[1]) / RADII[1]
    ramp = np.clip((np.hypot(dx, dy) - RAMP_FROM) / (1 - RAMP_FROM), 0.0, 1.0)
    weights: np.ndarray = (0.5 * (1.0 + np.cos(np.pi * ramp)))[..., None]
    weights.flags.writeable = False  # shared between requests by the cache
    return weights


def compose(picture: np.ndarray, faces: list[tuple[Box, np.ndarray]]) -> np.ndarray:
    """`picture` with each stylized face (any side) blended into its square, larger faces
    over smaller ones where squares overlap."""
    out = picture.copy()
    for square, face in sorted(faces, key=lambda pair: pair[0].width):
        side = square.width
        if face.shape[0] != side:
            face = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.LANCZOS))
        weights = mask(side)
        region = out[square.y : square.y + side, square.x : square.x + side]
        blended = region * (1.0 - weights) + face * weights
        region[...] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out
