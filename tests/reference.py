"""An independent oracle: the PyTorch port's forward pass, written functionally in float64.

It reads the port's state_dict keys directly and follows the port's documented semantics
(reflection padding, GroupNorm(1), LeakyReLU(0.2), bilinear upsampling with
align_corners=True, tanh; pre-processing x*2-1, post-processing clip(-1,1)*0.5+0.5 rounded).
Sharing no code with `deployments.core.network`, it catches layout and arithmetic mistakes.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

STRIDED = {"block_a.1", "block_b.0"}  # the two stride-2 convolutions, padded (0, 1, 0, 1)


def _cnl(x: torch.Tensor, sd: Mapping[str, torch.Tensor], prefix: str) -> torch.Tensor:
    weight = sd[f"{prefix}.1.weight"].double()
    bias = sd.get(f"{prefix}.1.bias")
    kernel = weight.shape[-1]
    if prefix in STRIDED:
        pad, stride = (0, 1, 0, 1), 2
    else:
        pad, stride = (kernel // 2,) * 4, 1
    groups = x.shape[1] // weight.shape[1]
    x = F.pad(x, pad, mode="reflect") if any(pad) else x
    x = F.conv2d(x, weight, None if bias is None else bias.double(), stride=stride, groups=groups)
    x = F.group_norm(x, 1, sd[f"{prefix}.2.weight"].double(), sd[f"{prefix}.2.bias"].double())
    return F.leaky_relu(x, 0.2)


def _inverted_residual(
    x: torch.Tensor, sd: Mapping[str, torch.Tensor], prefix: str
) -> torch.Tensor:
    out = _cnl(x, sd, f"{prefix}.layers.0")
    out = _cnl(out, sd, f"{prefix}.layers.1")
    out = F.conv2d(out, sd[f"{prefix}.layers.2.weight"].double())
    out = F.group_norm(
        out, 1, sd[f"{prefix}.layers.3.weight"].double(), sd[f"{prefix}.layers.3.bias"].double()
    )
    return x + out if out.shape == x.shape else out


def reference_forward(sd: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float64 (N, 3, H, W) -> [-1, 1] float64 (N, 3, H, W)."""
    out = x
    for i in range(3):
        out = _cnl(out, sd, f"block_a.{i}")
    half_size = out.shape[-2:]
    for i in range(2):
        out = _cnl(out, sd, f"block_b.{i}")
    out = _cnl(out, sd, "block_c.0")
    for i in range(1, 5):
        out = _inverted_residual(out, sd, f"block_c.{i}")
    out = _cnl(out, sd, "block_c.5")
    out = F.interpolate(out, size=tuple(half_size), mode="bilinear", align_corners=True)
    for i in range(2):
        out = _cnl(out, sd, f"block_d.{i}")
    out = F.interpolate(out, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=True)
    for i in range(3):
        out = _cnl(out, sd, f"block_e.{i}")
    return torch.tanh(F.conv2d(out, sd["out_layer.0.weight"].double()))


def reference_stylize(sd: Mapping[str, torch.Tensor], rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8, as the port's users get it."""
    x = torch.from_numpy(np.array(rgb)).double().permute(2, 0, 1)[None] / 255.0 * 2 - 1
    with torch.no_grad():
        y = reference_forward(sd, x)[0]
    out = (y.clamp(-1, 1) * 0.5 + 0.5) * 255.0
    return out.round().to(torch.uint8).permute(1, 2, 0).numpy()
