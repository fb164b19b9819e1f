"""Large pictures: one inference's time and peak memory by size, whole and in tiles, and how
far the tiles' result is from the whole frame's (part of `make bench`).

Each size runs in a fresh process, so its peak RSS is that inference's alone (beyond what the
process held before it). The tiles are the engine's own (core/tiles.py).

    python -m benchmarks.large [--sizes 1024 2048 4096] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from benchmarks.common import PHOTOS, ROOT, machine
from benchmarks.report import replace_section
from deployments.core import engine, tiles
from deployments.core.engine import Engine
from deployments.core.network import Generator
from deployments.core.weights import seeded_state_dict

PHOTO = PHOTOS / "railway-crossing.jpg"


def picture(side: int) -> np.ndarray:
    """The photo at long side `side` (3:2)."""
    image = Image.open(PHOTO).convert("RGB")
    height = round(image.height * side / image.width)
    return np.asarray(image.resize((side, height), Image.Resampling.BICUBIC))


def seeded_engine(memory_bytes: int | None = None) -> Engine:
    network = Generator()
    network.load_state_dict(seeded_state_dict(0))
    return Engine({"s": network}, precision="fp32", memory_bytes=memory_bytes)


def one(side: int, tile: int | None, threads: int) -> dict[str, float]:
    """In this process: one inference at `side` (in tiles of `tile` if given)."""
    torch.set_num_threads(threads)
    model = seeded_engine()
    model.tile = tile
    model.max_pixels = None if tile is None else 1
    pixels = picture(side)
    model.run("s", [picture(256)])  # the process's own memory, and kernels built
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    model.run("s", [pixels])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    megapixels = pixels.shape[0] * pixels.shape[1] / 1e6
    return {"seconds": seconds, "bytes": peak - before, "megapixels": megapixels}


def measured(side: int, tile: int | None, threads: int) -> dict[str, float]:
    command = [sys.executable, "-m", "benchmarks.large", "--one", str(side), "--threads"]
    command += [str(threads)] + (["--tile", str(tile)] if tile else [])
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def fidelity(side: int, tile: int, shrink: int) -> dict[str, float]:
    """The tiled result against the whole frame's: PSNR, mean difference, and the largest tone
    step between neighbouring tiles (their cores' mean differences from the whole frame)."""
    model = seeded_engine()
    pixels = picture(side)
    (whole,) = model.run("s", [pixels])
    model.max_pixels, model.tile = 1, tile
    saved, tiles.STATS_SHRINK = tiles.STATS_SHRINK, shrink
    try:
        (tiled,) = model.run("s", [pixels])
    finally:
        tiles.STATS_SHRINK = saved
    difference = tiled.astype(float) - whole.astype(float)
    mse = float(np.mean(difference**2))
    rows = tiles.spans(pixels.shape[0], tile, engine.TILE_OVERLAP)
    columns = tiles.spans(pixels.shape[1], tile, engine.TILE_OVERLAP)
    cores = np.array(
        [
            [difference[t + 64 : b - 64, left + 64 : r - 64].mean() for left, r in columns]
            for t, b in rows
        ]
    )
    steps = [abs(a - b) for a, b in zip(cores.ravel()[:-1], cores.ravel()[1:], strict=True)]
    return {
        "psnr": 10 * math.log10(255**2 / max(mse, 1e-12)),
        "mean": float(np.abs(difference).mean()),
        "step": max(steps, default=0.0),
        "tiles": len(rows) * len(columns),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=int)
    parser.add_argument("--tile", type=int)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.tile, args.threads)))
        return
    budget = seeded_engine(memory_bytes=4 * 1024**3)
    lines = [
        "## Large pictures (`python -m benchmarks.large`, part of `make bench`)",
        "",
        f"Machine: {machine()}. One fp32 inference on {args.threads} threads of "
        f"{PHOTO.name} resized to each long side (3:2), in a fresh process each: its peak "
        "RSS beyond the process's own before it, and its time. Tiled: as the engine runs a "
        f"picture beyond `inference_memory_bytes` (4 GiB by default: tiles of {budget.tile} px, "
        f"overlapping by {engine.TILE_OVERLAP}); here forced, in tiles of 1024 px.",
        "",
        "| long side | megapixels | whole: s | whole: peak GB | bytes per pixel | "
        "tiled (1024 px): s | tiled: peak GB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side in args.sizes:
        whole = measured(side, None, args.threads)
        cut = measured(side, 1024, args.threads) if side > 1024 else None
        lines.append(
            f"| {side} | {whole['megapixels']:.1f} | {whole['seconds']:.1f} "
            f"| {whole['bytes'] / 1e9:.2f} | {whole['bytes'] / whole['megapixels'] / 1e6:.0f} "
            + (
                f"| {cut['seconds']:.1f} | {cut['bytes'] / 1e9:.2f} |"
                if cut
                else "| (one tile) | |"
            )
        )
        print(lines[-1], flush=True)
    side = max(s for s in args.sizes if s <= 2048)
    lines += [
        "",
        f"The tiled result against the whole frame's at {side} px (the largest here that both "
        "fit), by tile size and by the side of the pass the GroupNorm statistics come from "
        "(1/4: a quarter of the picture's side, what the engine does; 1/1: the "
        "whole picture, exact statistics, which leaves only the tiles' borders). Tone step: "
        "the largest difference between neighbouring tiles' mean offsets from the whole "
        "frame, in 1/255.",
        "",
        "| tile | tiles | stats pass | PSNR dB | mean abs difference | tone step |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for tile, shrink in ((512, 4), (1024, 4), (1024, 2), (1024, 1)):
        f = fidelity(side, tile, shrink)
        lines.append(
            f"| {tile} | {f['tiles']:.0f} | 1/{shrink} | {f['psnr']:.1f} | {f['mean']:.2f} "
            f"| {f['step']:.2f} |"
        )
        print(lines[-1], flush=True)
    report = "\n".join(lines)
    path = ROOT / "benchmarks" / "RESULTS.md"
    path.write_text(replace_section(path.read_text(), "large", report))
    print(report)


if __name__ == "__main__":
    main()
