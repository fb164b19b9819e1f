"""Pictures beyond one call's memory, in tiles: the cover, the blend, and the result against
the whole frame's."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from deployments.core import engine, tiles
from deployments.core.engine import Engine
from deployments.core.network import Generator
from deployments.core.weights import seeded_state_dict
from tests.conftest import smooth_picture

SIDE = 256  # the smallest tile the engine uses


@pytest.fixture(scope="module")
def network() -> Generator:
    net = Generator()
    net.load_state_dict(seeded_state_dict(0))
    return net


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return 10 * math.log10(255**2 / max(mse, 1e-12))


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(600, 256, 64), (257, 256, 64), (1023, 512, 64), (256, 256, 64)]
)
def test_the_tiles_cover_the_side_aligned_and_overlapping(
    length: int, tile: int, overlap: int
) -> None:
    cuts = tiles.spans(length, tile, overlap)
    assert cuts[0][0] == 0 and cuts[-1][1] == length
    for (start, end), (following, _) in itertools.pairwise(cuts):
        assert start % tiles.ALIGN == 0 and end - start <= tile
        assert end - following >= overlap  # each overlaps the next by at least `overlap`
    assert cuts[-1][0] % tiles.ALIGN == 0 and cuts[-1][1] - cuts[-1][0] < tile + tiles.ALIGN
    weights = torch.zeros(length)
    for (start, end), ramp in zip(cuts, tiles.ramps(cuts), strict=True):
        weights[start:end] += ramp
    assert torch.allclose(weights, torch.ones(length))  # every pixel's weights sum to 1


def test_a_picture_beyond_the_budget_runs_in_tiles_close_to_the_whole_frame(
    network: Generator,
) -> None:
    whole_engine = Engine({"s": network}, precision="fp32")
    tiled_engine = Engine(
        {"s": network}, precision="fp32", memory_bytes=SIDE * SIDE * engine.BYTES_PER_PIXEL["fp32"]
    )
    assert tiled_engine.tile == SIDE
    picture = smooth_picture(600, 420, seed=3)
    (whole,) = whole_engine.run("s", [picture])
    (tiled,) = tiled_engine.run("s", [picture])
    assert tiled.shape == whole.shape and tiled.dtype == np.uint8
    assert psnr(tiled, whole) > 35  # the quarter-size statistics pass: close, not exact
    # No seam: across every tile's edge, neighbouring pixels differ no more than in the whole
    # frame's result (plus rounding).
    for start, _ in tiles.spans(600, SIDE, engine.TILE_OVERLAP)[1:]:
        for edge in (start, start + engine.TILE_OVERLAP):
            across = np.abs(np.diff(tiled[:, edge - 1 : edge + 1].astype(int), axis=1)).mean()
            own = np.abs(np.diff(whole[:, edge - 1 : edge + 1].astype(int), axis=1)).mean()
            assert across <= own + 1.0, (edge, across, own)


def test_with_the_whole_frame_s_statistics_tiles_are_the_whole_frame(network: Generator) -> None:
    """The tiles sample the whole picture's upsampling grid: given exact statistics (a pass at
    full size) nothing but the tiles' outer borders differs, and those are blended away."""
    model = Engine({"s": network}, precision="fp32")
    picture = smooth_picture(400, 280, seed=4)
    (whole,) = model.run("s", [picture])
    model.max_pixels, model.tile = 1, SIDE
    saved, tiles.STATS_SHRINK = tiles.STATS_SHRINK, 1
    try:
        (tiled,) = model.run("s", [picture])
    finally:
        tiles.STATS_SHRINK = saved
    assert psnr(tiled, whole) > 50


def test_a_batch_beyond_the_budget_runs_a_few_at_a_time(network: Generator) -> None:
    pictures = [smooth_picture(96, 64, seed=s) for s in range(5)]
    alone = Engine({"s": network}, precision="fp32").run("s", pictures)
    budget = 2 * 96 * 64 * engine.BYTES_PER_PIXEL["fp32"]  # two at once
    model = Engine({"s": network}, precision="fp32", memory_bytes=budget)
    calls: list[int] = []
    run = model._run

    def counted(net: Generator, images: Sequence[np.ndarray], *rest: Any, **named: Any) -> Any:
        calls.append(len(images))
        return run(net, images, *rest, **named)

    model._run = counted  # type: ignore[method-assign,assignment]
    split = model.run("s", pictures)
    assert calls == [2, 2, 1]
    # The same pictures, but for the last bit of fp32 that the batch size moves.
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(alone, split, strict=True))
