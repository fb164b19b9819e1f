"""`make soak`: drive the service at 3x its capacity for a set time, then watch it recover.

Measures capacity first (closed loop, 8 clients, unique 256 px photo crops), then sends requests
open-loop at 3x that rate: each must end in 200, or 503 with Retry-After, or 504 at its deadline,
and none may hang past it. Samples the RSS of every Ray process from start to end, then times
how long single requests take to get back to their quiet latency. Writes the figures into the
soak section of benchmarks/RESULTS.md.
Usage: python benchmarks/soak.py [--seconds 300] [--factor 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.loadgen import run_load  # noqa: E402
from benchmarks.procs import ray_processes, rss_mib  # noqa: E402
from benchmarks.report import replace_section  # noqa: E402
from benchmarks.run import Photos, deploy_ours, machine, start_cluster  # noqa: E402

PARAMS = {"style": "paprika", "size": 256}
DEADLINE_S = 60.0  # the service's request_timeout_s default
HANG_S = DEADLINE_S + 15  # an answer later than this counts as hung


@dataclass
class Soak:
    offered_per_s: float
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: dict[int, list[float]] = field(default_factory=dict)
    missing_retry_after: int = 0
    hung: int = 0
    other_errors: Counter[str] = field(default_factory=Counter)


def unique(bodies: list[bytes], index: int) -> bytes:
    """A distinct upload per request: bytes after a JPEG's end marker change the key, not the picture."""
    return bodies[index % len(bodies)] + index.to_bytes(8, "big")


async def drive(url: str, bodies: list[bytes], rate: float, seconds: float) -> Soak:
    """Open loop: a request every 1/rate s whatever the answers do, for `seconds`."""
    result = Soak(rate)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=HANG_S, limits=limits) as http:

        async def one(index: int) -> None:
            start = time.perf_counter()
            try:
                answer = await http.post("/v1/stylize", content=unique(bodies, index), params=PARAMS)
            except httpx.TimeoutException:
                result.hung += 1
                return
            except httpx.HTTPError as exc:
                result.other_errors[type(exc).__name__] += 1
                return
            result.statuses[answer.status_code] += 1
            result.latencies_ms.setdefault(answer.status_code, []).append(
                (time.perf_counter() - start) * 1e3)
            if answer.status_code == 503 and "retry-after" not in answer.headers:
                result.missing_retry_after += 1

        tasks = []
        start = time.perf_counter()
        index = 0
        while (elapsed := time.perf_counter() - start) < seconds:
            while index < elapsed * rate:
                tasks.append(asyncio.create_task(one(1_000_000 + index)))
                index += 1
            await asyncio.sleep(0.005)
        await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - start
    return result


def single_latency_ms(url: str, body: bytes) -> float:
    start = time.perf_counter()
    httpx.post(f"{url}/v1/stylize", content=body, params=PARAMS, timeout=HANG_S).raise_for_status()
    return (time.perf_counter() - start) * 1e3


def recovery_s(url: str, bodies: list[bytes], quiet_ms: float, limit_s: float = 60) -> float:
    """Seconds after the load stops until 3 single requests in a row are back near `quiet_ms`."""
    start = time.perf_counter()
    good = 0
    index = 5_000_000
    while time.perf_counter() - start < limit_s:
        index += 1
        try:
            fine = single_latency_ms(url, unique(bodies, index)) <= 1.5 * quiet_ms + 20
        except httpx.HTTPError:
            fine = False
        good = good + 1 if fine else 0
        if good == 3:
            return time.perf_counter() - start
        time.sleep(0.2)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the overload")
    parser.add_argument("--factor", type=float, default=3.0, help="offered load / capacity")
    options = parser.parse_args()

    from deployments.core.settings import OFFICIAL_STYLES
    from deployments.core.weights import write_seeded

    bodies = Photos(seed=7).unique(400, width=512, height=512)
    with tempfile.TemporaryDirectory() as folder:
        write_seeded(Path(folder), list(OFFICIAL_STYLES))
        url = start_cluster(Path(folder))
        try:
            deploy_ours(url)
            report = soak(url, bodies, options.seconds, options.factor)
        finally:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    path = ROOT / "benchmarks" / "RESULTS.md"
    path.write_text(replace_section(path.read_text() if path.exists() else "", "soak", report))
    print(report)


def soak(url: str, bodies: list[bytes], seconds: float, factor: float) -> str:
    print("warming up (8 s), then measuring capacity (8 clients, 15 s)", flush=True)
    run_load(url, "/v1/stylize", lambda i: (unique(bodies, i), PARAMS), clients=8,
             max_requests=10_000, max_seconds=8)
    capacity = run_load(url, "/v1/stylize", lambda i: (unique(bodies, 100_000 + i), PARAMS),
                        clients=8, max_requests=10_000, max_seconds=15).throughput
    quiet = statistics.median(single_latency_ms(url, unique(bodies, 200_000 + i)) for i in range(7))
    print(f"capacity {capacity:.1f} req/s, quiet single request {quiet:.0f} ms", flush=True)

    names = ray_processes()
    cache_start = cache_mib(url)
    rss_start = {pid: rss_mib(pid) for pid in names}
    rss_peak = dict(rss_start)
    rss_mid: dict[int, float | None] = {}
    rate = factor * capacity
    print(f"offering {rate:.1f} req/s for {seconds:.0f} s", flush=True)

    async def soak_with_sampling() -> Soak:
        driver = asyncio.create_task(drive(url, bodies, rate, seconds))
        began = time.monotonic()
        while not driver.done():
            await asyncio.sleep(5)
            for pid in names:
                now = rss_mib(pid)
                if now is not None and rss_start.get(pid) is not None:
                    rss_peak[pid] = max(rss_peak[pid] or 0, now)
            if not rss_mid and time.monotonic() - began >= seconds / 2:
                rss_mid.update({pid: rss_mib(pid) for pid in names})
        return await driver

    result = asyncio.run(soak_with_sampling())
    rss_end = {pid: rss_mib(pid) for pid in names}
    cache_end = cache_mib(url)
    back_s = recovery_s(url, bodies, quiet)
    text = render(result, capacity, quiet, back_s, names, rss_start, rss_mid, rss_peak, rss_end)
    return text + (
        f"\nResults held in the caches (bounded by cache_max_bytes and local_cache_max_bytes), "
        f"start -> end: cluster cache {cache_start[0]:.0f} -> {cache_end[0]:.0f} MiB, the "
        f"ingress's hot cache {cache_start[1]:.0f} -> {cache_end[1]:.0f} MiB.\n"
    )


def cache_mib(url: str) -> tuple[float, float]:
    """MiB of results in the cluster cache and in the answering ingress's hot cache."""
    figures = httpx.get(f"{url}/v1/stats", timeout=10).json()
    cluster = (figures["cache"] or {}).get("bytes", 0)
    return cluster / 2**20, figures["ingress"]["hot_cache"]["bytes"] / 2**20


def render(result: Soak, capacity: float, quiet_ms: float, back_s: float, names: dict[int, str],
           start: dict[int, float | None], mid: dict[int, float | None],
           peak: dict[int, float | None], end: dict[int, float | None]) -> str:
    total = sum(result.statuses.values()) + result.hung + sum(result.other_errors.values())
    lines = [
        f"## Soak: {result.offered_per_s / capacity:.0f}x capacity for {result.seconds:.0f} s",
        "",
        f"`make soak` (benchmarks/soak.py), {time.strftime('%Y-%m-%d')}, {machine()}.",
        f"Capacity (8 clients, all misses, 256 px): {capacity:.1f} req/s; offered open loop: "
        f"{result.offered_per_s:.1f} req/s; quiet single request: {quiet_ms:.0f} ms.",
        "",
        "| answer | count | share | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for status, count in sorted(result.statuses.items()):
        times = result.latencies_ms[status]
        p99 = statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]
        lines.append(f"| {status} | {count} | {count / total:.1%} | {statistics.median(times):.0f} "
                     f"| {p99:.0f} |")
    lines.append(f"| hung past {HANG_S:.0f} s | {result.hung} | {result.hung / total:.1%} | | |")
    for name, count in sorted(result.other_errors.items()):
        lines.append(f"| {name} | {count} | {count / total:.1%} | | |")
    served = result.statuses.get(200, 0) / result.seconds
    lines += [
        "",
        f"Pictures served during the overload: {served:.1f} req/s ({served / capacity:.0%} of "
        f"capacity). 503s without Retry-After: {result.missing_retry_after}. Back to the quiet "
        f"latency (3 single requests in a row within 1.5x + 20 ms) {back_s:.1f} s after the load "
        "stopped.",
        "",
        "RSS of every Ray process: growth that stops by half-time is a high-water mark (buffers of",
        "the busiest moment, caches filling to their bounds); growth that goes on is a leak.",
        "",
        "| Ray process | start MiB | half-time MiB | peak MiB | end MiB | second half |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for pid, name in sorted(names.items(), key=lambda kv: kv[1]):
        if None in (start.get(pid), mid.get(pid), end.get(pid)):
            lines.append(f"| {name} ({pid}) | {start.get(pid) or 0:.0f} | | | gone | |")
            continue
        lines.append(f"| {name} | {start[pid]:.0f} | {mid[pid]:.0f} | {peak[pid]:.0f} "
                     f"| {end[pid]:.0f} | {end[pid] - mid[pid]:+.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
