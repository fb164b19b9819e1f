"""The bare-model ceiling: the engine alone, no Ray, no HTTP, per precision, batch and layout.

A layout is P processes x T torch threads; all processes run the same cell at once (started
together at a barrier) and their images per second are added up.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Any

Cell = tuple[str, int, int]  # precision, side, batch


@dataclass(frozen=True)
class BareResult:
    precision: str
    side: int
    batch: int
    processes: int
    threads: int
    images_per_s: float
    ms_per_batch: float


def _worker(threads: int, cells: list[Cell], seconds: float, barrier: Any, out: Any) -> None:
    import torch

    from deployments.core.engine import Engine, gate_picture
    from deployments.core.network import Generator
    from deployments.core.weights import seeded_state_dict

    torch.set_num_threads(threads)
    network = Generator()
    network.load_state_dict(seeded_state_dict(0))
    engines = {p: Engine({"s": network}, precision=p) for p in {c[0] for c in cells}}
    for cell in cells:
        precision, side, batch = cell
        engine, pictures = engines[precision], [gate_picture(side)] * batch
        engine.run("s", pictures)  # kernels for this shape
        barrier.wait()
        images, runs, start = 0, 0, time.perf_counter()
        while runs < 2 or time.perf_counter() - start < seconds:
            engine.run("s", pictures)
            images, runs = images + batch, runs + 1
        elapsed = time.perf_counter() - start
        out.put((cell, images / elapsed, elapsed / runs * 1e3))


def measure(cells: list[Cell], *, processes: int, threads: int, seconds: float) -> list[BareResult]:
    """Run every cell under one layout; results in the order of `cells`."""
    context = mp.get_context("spawn")
    barrier, out = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_worker, args=(threads, cells, seconds, barrier, out))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    rates: dict[Cell, list[tuple[float, float]]] = {}
    for _ in range(processes * len(cells)):
        cell, rate, ms = out.get(timeout=900)
        rates.setdefault(cell, []).append((rate, ms))
    for worker in workers:
        worker.join()
    return [
        BareResult(
            *cell,
            processes,
            threads,
            sum(r for r, _ in rates[cell]),
            max(ms for _, ms in rates[cell]),
        )
        for cell in cells
    ]


def bare_rates(
    sides: list[int], precisions: tuple[str, ...] = ("fp32", "bf16")
) -> dict[int, float]:
    """The bare engine's images/s at each side, 2 processes x 1 thread (a model replica's
    layout), in the fastest of `precisions` (the app's choice where both are given)."""
    cells = [(p, side, 1) for p in precisions for side in sides]
    bare: dict[int, float] = {}
    for result in measure(cells, processes=2, threads=1, seconds=4.0):
        bare[result.side] = max(bare.get(result.side, 0.0), result.images_per_s)
        print(f"  bare 2x1 {result.precision} {result.side}px: {result.images_per_s:.2f} img/s")
    return bare
