"""AnimeGANv2 generator, laid out so the PyTorch port's checkpoints load with `strict=True`.

Paper: "AnimeGANv2" (Chen, Liu, Chen), TensorFlow original by TachibanaYoshino.
Weights: the MIT-licensed PyTorch port by bryandlee (`weights/<style>.pt`, see `weights.py`);
the weights themselves are free for non-commercial use only.

    image (N, 3, H, W) in [-1, 1]
      block_a   conv7 32 -> conv3/2 64 -> conv3 64            (H/2)
      block_b   conv3/2 128 -> conv3 128                       (H/4)
      block_c   conv3 128 -> 4 x inverted residual 256 -> conv3 128
      upsample to H/2 (bilinear, align_corners)
      block_d   conv3 128 -> conv3 128
      upsample to H (bilinear, align_corners)
      block_e   conv3 64 -> conv3 64 -> conv7 32
      out_layer conv1 3 -> tanh
    stylized (N, 3, H, W) in [-1, 1]

Every "conv" is reflection pad + Conv2d + GroupNorm(1 group) + LeakyReLU(0.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MIN_SIDE", "ConvNormLReLU", "Generator", "InvertedResBlock", "Window"]

# Below 8 px the reflection pads of the quarter-resolution blocks have nothing to reflect.
MIN_SIDE = 8


class ConvNormLReLU(nn.Sequential):
    """pad -> conv -> GroupNorm(1) -> LeakyReLU(0.2); indices 1 and 2 carry the weights."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | tuple[int, int, int, int] = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            nn.ReflectionPad2d(padding),
            nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, groups=groups, bias=bias),
            nn.GroupNorm(num_groups=1, num_channels=out_ch, affine=True),
            nn.LeakyReLU(0.2, inplace=True),
        )


class InvertedResBlock(nn.Module):
    """MobileNetV2 block: expand 1x1 -> depthwise 3x3 -> project 1x1 + GroupNorm (+ skip)."""

    def __init__(self, in_ch: int, out_ch: int, expansion_ratio: int = 2) -> None:
        super().__init__()
        hidden = in_ch * expansion_ratio
        self.use_res_connect = in_ch == out_ch
        self.layers = nn.Sequential(
            ConvNormLReLU(in_ch, hidden, kernel_size=1, padding=0),
            ConvNormLReLU(hidden, hidden, groups=hidden, bias=True),
            nn.Conv2d(hidden, out_ch, kernel_size=1, bias=False),
            nn.GroupNorm(num_groups=1, num_channels=out_ch, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(x)
        return x + out if self.use_res_connect else out


class Generator(nn.Module):
    """The AnimeGANv2 generator; any input of at least MIN_SIDE pixels a side."""

    def __init__(self) -> None:
        super().__init__()
        # encoder: full -> half -> quarter resolution
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, 32, kernel_size=7, padding=3),
            ConvNormLReLU(32, 64, stride=2, padding=(0, 1, 0, 1)),
            ConvNormLReLU(64, 64),
        )
        self.block_b = nn.Sequential(
            ConvNormLReLU(64, 128, stride=2, padding=(0, 1, 0, 1)),
            ConvNormLReLU(128, 128),
        )
        # residual body at quarter resolution
        self.block_c = nn.Sequential(
            ConvNormLReLU(128, 128),
            InvertedResBlock(128, 256),
            InvertedResBlock(256, 256),
            InvertedResBlock(256, 256),
            InvertedResBlock(256, 256),
            ConvNormLReLU(256, 128),
        )
        # decoder: quarter -> half -> full resolution
        self.block_d = nn.Sequential(
            ConvNormLReLU(128, 128),
            ConvNormLReLU(128, 128),
        )
        self.block_e = nn.Sequential(
            ConvNormLReLU(128, 64),
            ConvNormLReLU(64, 64),
            ConvNormLReLU(64, 32, kernel_size=7, padding=3),
        )
        self.out_layer = nn.Sequential(
            nn.Conv2d(32, 3, kernel_size=1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x: torch.Tensor, window: Window | None = None) -> torch.Tensor:
        """`window`: where `x` lies in a larger picture, when it is a tile of one."""
        half = self.block_a(x)
        out = self.block_c(self.block_b(half))
        out = self.block_d(_upsample(out, half.shape[-2:], window, 2))
        out = self.block_e(_upsample(out, x.shape[-2:], window, 1))
        image: torch.Tensor = self.out_layer(out)
        return image


@dataclass(frozen=True)
class Window:
    """A tile's top-left corner in the whole picture (multiples of 4, so that the encoder's
    strides line up with the whole picture's) and the whole picture's height and width."""

    top: int
    left: int
    height: int
    width: int


def _upsample(x: torch.Tensor, size: torch.Size, window: Window | None, scale: int) -> torch.Tensor:
    """Bilinear, align_corners=True (as torch.hub users get it) to `size`, which is the whole
    picture shrunk by `scale`; a tile samples the whole picture's grid, not its own."""
    if window is None:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
    rows = _positions(window.top, size[0], window.height, scale, x.shape[-2])
    columns = _positions(window.left, size[1], window.width, scale, x.shape[-1])
    grid = torch.stack(torch.meshgrid(columns, rows, indexing="xy"), dim=-1)  # (H, W, [x, y])
    grid = grid[None].expand(x.shape[0], -1, -1, -1)
    sampled = F.grid_sample(x.float(), grid, mode="bilinear", align_corners=True)
    return sampled.to(x.dtype)


def _positions(start: int, count: int, full: int, scale: int, have: int) -> torch.Tensor:
    """Where each output row (or column) of a tile samples its input, on the whole picture's
    align_corners grid, as grid_sample's coordinates (-1: the tile's first input row)."""
    full_out, full_in = full // scale, full // (2 * scale)  # each stride halves, rounding down
    wanted = torch.arange(start // scale, start // scale + count, dtype=torch.float64)
    at = wanted * (full_in - 1) / max(full_out - 1, 1) - start // (2 * scale)
    at = at.clamp(0, have - 1)
    return (2 * at / max(have - 1, 1) - 1).float()
