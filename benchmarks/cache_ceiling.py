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
import hashlib
import io
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from PIL import Image

from benchmarks.common import Photos
from benchmarks.procs import cpu_ms_since, cpu_snapshot
from deployments.actors import NAMESPACE, named_actor
from deployments.cache import CacheActor
from deployments.core.faces import Box
from deployments.core.imaging import Cut
from deployments.core.results import Picture
from deployments.core.shard_ring import ShardRing

IN_FLIGHT = 4  # open calls per caller, as an ingress replica under load has
ACTOR = "ray::CacheActor"
CORES = os.cpu_count() or 1
KEYS = 32  # stored results the lookups cycle through


@ray.remote(num_cpus=0)
class Caller:
    """One process calling the cache's shards in a closed loop, each key on its own shard."""

    def __init__(self, names: list[str]) -> None:
        self.shards = [ray.get_actor(name, namespace=NAMESPACE) for name in names]
        self.ring = ShardRing(len(names))

    def _shard(self, key: str) -> Any:
        return self.shards[self.ring.shard_of(key)]

    async def lookups(self, keys: list[str], seconds: float) -> int:
        async def loop(offset: int) -> int:
            done, deadline = 0, time.monotonic() + seconds
            while time.monotonic() < deadline:
                key = keys[(offset + done) % len(keys)]
                await self._shard(key).get_or_claim.remote(key)
                done += 1
            return done

        return sum(await asyncio.gather(*(loop(i) for i in range(IN_FLIGHT))))

    async def puts(self, picture: Picture, prefix: str, seconds: float) -> int:
        async def loop(lane: int) -> int:
            done, deadline = 0, time.monotonic() + seconds
            while time.monotonic() < deadline:
                key = hashlib.sha256(f"{prefix}-{lane}-{done}".encode()).hexdigest()
                await self._shard(key).put.remote(key, picture)
                done += 1
            return done

        return sum(await asyncio.gather(*(loop(i) for i in range(IN_FLIGHT))))


@dataclass
class Ceiling:
    side: int
    picture_bytes: int
    shards: int
    callers: int
    lookups_per_s: float
    puts_per_s: float
    lookup_ms: float  # the actor's own CPU per lookup
    put_ms: float  # and per put
    busy: float  # % of the machine's CPU in use meanwhile

    @property
    def misses_per_s_alone(self) -> float:
        """What the shards could take with a core each to themselves: their own CPU per miss."""
        return self.shards * 1e3 / (self.lookup_ms + self.put_ms)

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
    """Lookups and puts per second on fresh cache actors, for 256 and 512 px results, one shard
    with 1 and 4 callers, and two shards with 4 callers."""
    found = []
    for side in (256, 512):
        picture = result_png(side)
        for shards, count in ((1, 1), (1, 4), (2, 4)):
            names = [f"ceiling-{side}-{count}-{shards}-{shard}" for shard in range(shards)]
            caches = [named_actor(CacheActor, name, 1 << 30, None, 60.0) for name in names]
            ring = ShardRing(shards)
            keys = [hashlib.sha256(f"stored-{i}".encode()).hexdigest() for i in range(KEYS)]
            ray.get([caches[ring.shard_of(key)].put.remote(key, picture) for key in keys])
            callers = [Caller.remote(names) for _ in range(count)]  # type: ignore[attr-defined]
            ray.get([c.lookups.remote(keys, 1.0) for c in callers])  # warm up
            before = cpu_snapshot()
            looked = sum(ray.get([c.lookups.remote(keys, seconds) for c in callers]))
            lookup_cpu, before = cpu_ms_since(before), cpu_snapshot()
            put = sum(
                ray.get([c.puts.remote(picture, f"c{i}", seconds) for i, c in enumerate(callers)])
            )
            put_cpu = cpu_ms_since(before)
            ceiling = Ceiling(
                side,
                len(picture.body),
                shards,
                count,
                looked / seconds,
                put / seconds,
                lookup_ms=lookup_cpu.get(ACTOR, 0.0) / looked,
                put_ms=put_cpu.get(ACTOR, 0.0) / put,
                busy=(sum(lookup_cpu.values()) + sum(put_cpu.values())) / (20 * seconds * CORES),
            )
            found.append(ceiling)
            print(f"  cache {side}px, {shards} shard(s), {count} caller(s): {ceiling}", flush=True)
            for actor in (*callers, *caches):
                ray.kill(actor)
    return found


def report(ceilings: list[Ceiling], replica_rate: dict[int, float]) -> str:
    """The RESULTS.md section; `replica_rate`: misses a second one model replica makes, by side."""
    lines = [
        "## The cache actor's ceiling",
        "",
        f"Measured by `make bench` (or python -m benchmarks.cache_ceiling) on {CORES} cores. "
        "Cache actors called from 1 or 4 caller processes (as ingress replicas call them), each "
        f"keeping {IN_FLIGHT} calls open: lookups that hit, then puts of new results, keys "
        "spread over the shards as the ingress spreads them. A miss costs the cache one lookup "
        "(the claim) and one put. *Here*: what the cache took on this machine, where callers, "
        "actors and Ray share the cores. *Alone*: what the actors would take with a core each, "
        "from their own CPU per lookup and per put. One CPU model replica makes the bare "
        "engine's rate of misses (1 process, 1 thread, bf16, batch 1).",
        "",
        "| result | shards | callers | lookups/s | puts/s | MB/s | machine busy | actor CPU "
        "per lookup / put | misses/s here | replicas here | misses/s alone | replicas alone |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in ceilings:
        rate = replica_rate[c.side]
        lines.append(
            f"| {c.side} px PNG, {c.picture_bytes / 1e3:.0f} kB | {c.shards} | {c.callers} "
            f"| {c.lookups_per_s:.0f} | {c.puts_per_s:.0f} | {c.megabytes_per_s:.0f} "
            f"| {c.busy:.0f}% | {c.lookup_ms:.2f} / {c.put_ms:.2f} ms "
            f"| {c.misses_per_s:.0f} | {c.misses_per_s / rate:.0f} "
            f"| {c.misses_per_s_alone:.0f} | {c.misses_per_s_alone / rate:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    from benchmarks.common import ROOT, start_cluster, stop_cluster
    from benchmarks.report import replace_section
    from benchmarks.run import replica_rates

    rates = replica_rates([])
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
