"""What one cache actor carries, and how many model replicas it can serve before it binds.

Callers are Ray actors (as the ingress replicas are), each keeping `IN_FLIGHT` calls open:
lookups that hit (the per-ingress hot cache bypassed), and puts of new results, with PNG results
of 256 and 512 px. A miss costs the actor one lookup (the claim) and one put, so one actor takes
at most 1 / (1/lookups + 1/puts) misses a second; a CPU model replica makes `rate` of them (the
bare engine, one process on one core), so the actor binds at that many misses / rate replicas.

    python -m benchmarks.cache_ceiling   # alone; `make bench` runs it too
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass

import numpy as np
import ray
from PIL import Image

from benchmarks.common import Photos
from deployments.actors import NAMESPACE, named_actor
from deployments.cache import CacheActor
from deployments.core.faces import Box
from deployments.core.imaging import Cut
from deployments.core.results import Picture

IN_FLIGHT = 4  # open calls per caller, as an ingress replica under load has
KEYS = 32  # stored results the lookups cycle through


@ray.remote(num_cpus=0)
class Caller:
    """One process calling the cache actor in a closed loop."""

    def __init__(self, name: str) -> None:
        self.cache = ray.get_actor(name, namespace=NAMESPACE)

    async def lookups(self, keys: list[str], seconds: float) -> int:
        async def loop(offset: int) -> int:
            done, deadline = 0, time.monotonic() + seconds
            while time.monotonic() < deadline:
                await self.cache.get_or_claim.remote(keys[(offset + done) % len(keys)])
                done += 1
            return done

        return sum(await asyncio.gather(*(loop(i) for i in range(IN_FLIGHT))))

    async def puts(self, picture: Picture, prefix: str, seconds: float) -> int:
        async def loop(lane: int) -> int:
            done, deadline = 0, time.monotonic() + seconds
            while time.monotonic() < deadline:
                await self.cache.put.remote(f"{prefix}-{lane}-{done}", picture)
                done += 1
            return done

        return sum(await asyncio.gather(*(loop(i) for i in range(IN_FLIGHT))))


@dataclass
class Ceiling:
    side: int
    picture_bytes: int
    callers: int
    lookups_per_s: float
    puts_per_s: float

    @property
    def misses_per_s(self) -> float:
        return 1 / (1 / self.lookups_per_s + 1 / self.puts_per_s)

    @property
    def megabytes_per_s(self) -> float:  # put and read back: each miss's bytes cross twice
        return (self.lookups_per_s + self.puts_per_s) / 2 * self.picture_bytes / 1e6


def result_png(side: int) -> Picture:
    """A PNG as the service encodes one (level 1) of a photo at `side` px."""
    (data,) = Photos(seed=side).unique(1, width=side, height=side)
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    return Picture(out.getvalue(), Cut("none", Box(0, 0, side, side)))


def measure(seconds: float = 5.0) -> list[Ceiling]:
    """Lookups and puts per second on a fresh cache actor, for 256 and 512 px, 1 and 4 callers."""
    found = []
    for side in (256, 512):
        picture = result_png(side)
        for count in (1, 4):
            name = f"ceiling-{side}-{count}"
            cache = named_actor(CacheActor, name, 1 << 30, None, 60.0)
            keys = [f"stored-{i}" for i in range(KEYS)]
            ray.get([cache.put.remote(key, picture) for key in keys])
            callers = [Caller.remote(name) for _ in range(count)]  # type: ignore[attr-defined]
            ray.get([c.lookups.remote(keys, 1.0) for c in callers])  # warm up
            looked = sum(ray.get([c.lookups.remote(keys, seconds) for c in callers]))
            put = sum(
                ray.get([c.puts.remote(picture, f"c{i}", seconds) for i, c in enumerate(callers)])
            )
            found.append(Ceiling(side, len(picture.body), count, looked / seconds, put / seconds))
            print(f"  cache actor {side}px x{count}: {found[-1]}", flush=True)
            for actor in (*callers, cache):
                ray.kill(actor)
    return found


def report(ceilings: list[Ceiling], replica_rate: dict[int, float]) -> str:
    """The RESULTS.md section; `replica_rate`: misses a second one model replica makes, by side."""
    lines = [
        "## The cache actor's ceiling",
        "",
        "One cache actor, called from 1 or 4 caller processes (as ingress replicas call it), each "
        f"keeping {IN_FLIGHT} calls open: lookups that hit, and puts of new results. A miss costs "
        "it a lookup (the claim) and a put; one CPU model replica makes the bare engine's rate "
        "of misses (1 process, 1 thread, bf16, batch 1).",
        "",
        "| result | callers | lookups/s | puts/s | MB/s | misses/s it can take | "
        "replica misses/s | replicas before it binds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in ceilings:
        rate = replica_rate[c.side]
        lines.append(
            f"| {c.side} px PNG, {c.picture_bytes / 1e3:.0f} kB | {c.callers} "
            f"| {c.lookups_per_s:.0f} | {c.puts_per_s:.0f} | {c.megabytes_per_s:.0f} "
            f"| {c.misses_per_s:.0f} | {rate:.2f} | {c.misses_per_s / rate:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    from benchmarks.bare import measure as bare
    from benchmarks.common import ROOT, start_cluster, stop_cluster
    from benchmarks.report import replace_section

    cells = [("bf16", side, 1) for side in (256, 512)]
    rates = {r.side: r.images_per_s for r in bare(cells, processes=1, threads=1, seconds=3.0)}
    start_cluster()
    try:
        ceilings = measure()
    finally:
        stop_cluster()
    text = report(ceilings, rates)
    path = ROOT / "benchmarks" / "RESULTS.md"
    path.write_text(replace_section(path.read_text() if path.exists() else "", "cache", text))
    print(text)


if __name__ == "__main__":
    main()
