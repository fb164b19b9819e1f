"""The line's own cost per synchronous miss, apart from the model: its actor's CPU per miss.

Starts a local Ray, the real scheduler actor, and drives it as a loaded app does: 8 clients
acquire a slot, hold it as long as a model replica would at `--rate` misses a second, release
it; an ingress replica takes jobs (none come) and two model replicas report once a second. The
figure does not depend on how fast this CPU runs the model, so it can be compared across
machines and against older code (run it from that code's tree).
Usage: python -m benchmarks.line_cost [--seconds 20] [--rate 15] [--slots 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import time

import ray

from benchmarks.procs import cpu_s, ray_processes
from deployments.actors import named_actor
from deployments.core.fair_queue import QUANTUM
from deployments.core.settings import Settings
from deployments.scheduler import SchedulerActor

CLIENTS = 8
REPLICAS = ("model-a", "model-b")


async def drive(actor: ray.actor.ActorHandle, seconds: float, rate: float, slots: int) -> int:
    """Misses through the line for `seconds`; how many were served."""
    hold_s = len(REPLICAS) * slots / rate
    stop = time.monotonic() + seconds
    served = 0

    async def client(index: int) -> None:
        nonlocal served
        while time.monotonic() < stop:
            ticket, key = secrets.token_hex(16), secrets.token_hex(32)
            refused = await actor.acquire.remote(ticket, "ingress", f"c{index}", key, 30.0, QUANTUM)
            if refused is None:
                await asyncio.sleep(hold_s)
                actor.release.remote(ticket, key, True)
                served += 1

    async def ingress() -> None:
        while time.monotonic() < stop:
            await actor.take.remote("ingress", 8, [], [])

    async def models() -> None:
        while time.monotonic() < stop:
            for replica in REPLICAS:
                actor.report.remote(replica, {"slots": slots})
            await asyncio.sleep(1.0)

    await asyncio.gather(*(client(i) for i in range(CLIENTS)), ingress(), models())
    return served


async def measure(seconds: float, rate: float, slots: int) -> None:
    actor = named_actor(SchedulerActor, "line-cost", Settings(), "line-cost")
    for replica in REPLICAS:
        await actor.report.remote(replica, {"slots": slots})
    await drive(actor, 2.0, rate, slots)  # warm
    pid = next(p for p, name in ray_processes().items() if "SchedulerActor" in name)
    used, start = cpu_s(pid) or 0.0, time.monotonic()
    served = await drive(actor, seconds, rate, slots)
    used, elapsed = (cpu_s(pid) or 0.0) - used, time.monotonic() - start
    print(
        f"{served} misses in {elapsed:.1f} s ({served / elapsed:.1f}/s, "
        f"{len(REPLICAS) * slots} slots): line actor {used * 1e3 / served:.2f} ms CPU per miss"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=15.0, help="misses/s the model serves")
    parser.add_argument("--slots", type=int, default=2, help="slots each model replica reports")
    options = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        asyncio.run(measure(options.seconds, options.rate, options.slots))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
