"""A picture too large for one inference's memory, stylized in overlapping tiles.

Two things make a tile come out unlike the same region of the whole picture, and both are
undone here. The generator's upsampling interpolates on a grid that depends on the size it is
given: each tile samples the whole picture's grid instead (`network.Window`). And every
GroupNorm normalises over whatever it is given: a first pass over the whole picture shrunk by
STATS_SHRINK records each one's mean and variance, and every tile is normalised with those.
Tiles overlap by `overlap` px, blended with linear ramps. How close that comes to the
whole-frame result: benchmarks/RESULTS.md, "Large pictures".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .network import Generator, Window

STATS_SHRINK = 4  # the statistics pass's side, a share of the picture's (~6% of its cost: NOTES)
ALIGN = 4  # tiles start on multiples of the encoder's two strides

Stats = dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]


def spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Start and end of each tile along one side: as few tiles of at most about `tile` px as
    cover it with neighbours overlapping by at least `overlap`, each starting on a multiple
    of ALIGN, the last flush with the end."""
    if length <= tile:
        return [(0, length)]
    count = -(-(length - overlap) // (tile - overlap - ALIGN))  # ceil: room for the rounding
    size = -(-(length + (count - 1) * overlap) // count) + ALIGN  # just enough for the cover
    starts = [(i * (length - size) // (count - 1)) // ALIGN * ALIGN for i in range(count)]
    return [(start, start + size) for start in starts[:-1]] + [(starts[-1], length)]


def ramps(cuts: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Each tile's weights along one side: 1 where it alone covers, ramping linearly across
    each overlap with a neighbour, so that every pixel's weights sum to 1."""
    weights = []
    for i, (start, end) in enumerate(cuts):
        w = torch.ones(end - start)
        if i > 0 and (shared := cuts[i - 1][1] - start) > 0:
            w[:shared] = torch.arange(1, shared + 1) / (shared + 1)
        if i + 1 < len(cuts) and (shared := end - cuts[i + 1][0]) > 0:
            w[-shared:] = torch.arange(shared, 0, -1) / (shared + 1)
        weights.append(w)
    return weights


def run_tiled(network: Generator, x: torch.Tensor, *, tile: int, overlap: int) -> torch.Tensor:
    """`network(x)` for pictures (N, 3, H, W) in tiles of at most `tile` px overlapping by
    `overlap`, normalised with the statistics of a pass over `x` shrunk by STATS_SHRINK."""
    height, width = x.shape[-2:]
    small = F.interpolate(
        x.float(),
        size=(max(8, height // STATS_SHRINK), max(8, width // STATS_SHRINK)),
        mode="area",
    ).to(x.dtype)
    with _recorded(network) as stats:
        network(small)
    rows, columns = spans(height, tile, overlap), spans(width, tile, overlap)
    out = torch.zeros((x.shape[0], 3, height, width), dtype=torch.float32)
    out = out.contiguous(memory_format=torch.channels_last)  # as the whole frame's comes back
    with _replayed(network, stats):
        for (top, bottom), wy in zip(rows, ramps(rows), strict=True):
            for (left, right), wx in zip(columns, ramps(columns), strict=True):
                window = Window(top, left, height, width)
                y = network(x[..., top:bottom, left:right], window).float()
                out[..., top:bottom, left:right] += y * (wy[:, None] * wx[None, :])
    return out


@contextlib.contextmanager
def _recorded(network: nn.Module) -> Iterator[Stats]:
    """While open, each GroupNorm's input mean and variance (per picture) are recorded."""
    stats: Stats = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        var, mean = torch.var_mean(inputs[0].float(), dim=(1, 2, 3), keepdim=True, correction=0)
        stats[module] = (mean, var)

    handles = [m.register_forward_pre_hook(record) for m in _norms(network)]
    try:
        yield stats
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _replayed(network: nn.Module, stats: Stats) -> Iterator[None]:
    """While open, each GroupNorm normalises with the recorded statistics."""
    norms = _norms(network)
    for norm in norms:
        norm.forward = _normalising(norm, *stats[norm])  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def _norms(network: nn.Module) -> list[nn.GroupNorm]:
    """The generator's GroupNorms (all of one group: over channels and pixels together)."""
    return [m for m in network.modules() if isinstance(m, nn.GroupNorm) and m.num_groups == 1]


def _normalising(
    norm: nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    # y = (x - mean) / sqrt(var + eps) * weight + bias, folded into one multiply-add.
    gain = torch.rsqrt(var + norm.eps) * norm.weight.float()[None, :, None, None]
    shift = norm.bias.float()[None, :, None, None] - mean * gain

    def forward(x: torch.Tensor) -> torch.Tensor:  # in fp32: bf16 would lose the fold's digits
        return torch.addcmul(shift, x.float(), gain).to(x.dtype)

    return forward
