"""`make bench`: the bare model, our app, the seed's naive app and a Serve echo, side by side.

Everything runs in one go on this machine, prints each figure as it comes, and writes the bench
and cache sections of benchmarks/RESULTS.md (the cache actor's ceiling: cache_ceiling.py) plus
benchmarks/throughput.png.
Usage: python -m benchmarks.run [--quick] [--skip-bare]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import cache_ceiling
from benchmarks.bare import BareResult, measure
from benchmarks.common import (
    ROOT,
    Photos,
    deploy_echo,
    deploy_naive,
    deploy_ours,
    machine,
    start_cluster,
    stop_cluster,
)
from benchmarks.load import Load, run_closed
from benchmarks.procs import cpu_ms_since, cpu_snapshot
from benchmarks.report import CpuTable, Runs, Scenario, render, replace_section


def cold_start_s(weights_dir: Path, timeout_s: float = 180) -> float:
    """Seconds from `serve run serve_config.yaml` (what `make serve` runs) to the first picture."""
    import signal
    import subprocess

    import httpx

    env = {**os.environ, "ANIMEGAN_WEIGHTS_DIR": str(weights_dir)}
    picture = Photos(seed=2).unique(1)[0]
    start = time.monotonic()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("serve")), "run", "serve_config.yaml"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - start < timeout_s:
            try:
                answer = httpx.post(
                    "http://127.0.0.1:8000/v1/stylize",
                    content=picture,
                    params={"size": 256},
                    timeout=30,
                )
                if answer.status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError("serve run gave no picture in time")
    finally:
        server.send_signal(signal.SIGINT)  # serve run shuts Serve and its Ray cluster down
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:  # seen once: a cluster that does not stop in time
            server.kill()
            subprocess.run(
                [str(Path(sys.executable).with_name("ray")), "stop", "--force"], check=False
            )


# -- scenarios ---------------------------------------------------------------------------------


def load(
    url: str,
    path: str,
    bodies: list[bytes],
    params: dict[str, str | int],
    *,
    clients: int,
    seconds: float,
) -> Load:
    return run_closed(
        url,
        path,
        lambda i: (bodies[i % len(bodies)], params),
        clients=clients,
        max_requests=len(bodies),
        max_seconds=seconds,
    )


def served_scenarios(
    url: str, weights_dir: Path, *, seconds: float
) -> tuple[Runs, dict[str, object], CpuTable]:
    photos = Photos(seed=1)
    small: dict[str, str | int] = {"style": "paprika", "size": 256}
    square: dict[str, str | int] = {"style": "face_paint_512_v2", "size": 512, "crop": "square"}
    runs: Runs = {}

    def record(scenario: Scenario, result: Load) -> None:
        runs[scenario] = result
        print(
            f"  {scenario.label:<28} {result.throughput:7.2f} req/s  "
            f"p50 {result.percentile(50):8.1f} ms  p99 {result.percentile(99):8.1f} ms  "
            f"errors {result.errors}",
            flush=True,
        )

    deploy_ours(url, weights_dir)
    load(url, "/v1/stylize", photos.unique(120), small, clients=8, seconds=seconds)  # warm, scale
    cpu: CpuTable = {}
    for clients in (1, 4, 8, 16):
        bodies = photos.unique(int(seconds * 40))
        before = cpu_snapshot()
        misses = load(url, "/v1/stylize", bodies, small, clients=clients, seconds=seconds)
        record(Scenario("ours", "misses", clients), misses)
        if clients == 8:
            cpu[Scenario("ours", "misses", clients)] = cpu_ms_since(before, misses.requests)
    popular = photos.unique(20)
    load(url, "/v1/stylize", popular, small, clients=4, seconds=seconds * 2)  # fill the cache
    for clients in (1, 8):
        record(
            Scenario("ours", "hits", clients),
            load(url, "/v1/stylize", popular * 200, small, clients=clients, seconds=seconds),
        )
    fresh = photos.unique(int(seconds * 20))
    mix = [popular[i % 20] if i % 5 else fresh[i // 5] for i in range(len(fresh) * 5)]
    record(
        Scenario("ours", "hot mix 80/20", 8),
        load(url, "/v1/stylize", mix, small, clients=8, seconds=seconds),
    )
    before = cpu_snapshot()
    square_misses = load(
        url, "/v1/stylize", photos.unique(200), square, clients=8, seconds=seconds * 1.5
    )
    record(Scenario("ours", "512 square", 8), square_misses)
    cpu[Scenario("ours", "512 square", 8)] = cpu_ms_since(before, square_misses.requests)
    ours_stats = _stats(url)

    deploy_naive(url, weights_dir)
    for clients in (1, 4, 8):
        record(
            Scenario("naive", "misses", clients),
            load(
                url,
                "/naive/v1/stylize",
                photos.unique(100),
                small,
                clients=clients,
                seconds=seconds,
            ),
        )
    record(
        Scenario("naive", "512 square", 8),
        load(url, "/naive/v1/stylize", photos.unique(60), square, clients=8, seconds=seconds * 1.5),
    )
    from ray import serve

    serve.delete("naive")

    deploy_echo()
    for clients in (1, 8):
        before = cpu_snapshot()
        echoed = load(url, "/echo", [popular[0]] * 100_000, {}, clients=clients, seconds=seconds)
        record(Scenario("echo", "echo", clients), echoed)
        if clients == 8:  # the floor: what any answer through the Serve proxy costs
            cpu[Scenario("echo", "echo", 8)] = cpu_ms_since(before, echoed.requests)
    model = ours_stats["model"]
    summary = {k: model[k] for k in ("replicas", "batch_sizes", "batch_caps")}
    summary["seconds_per_megapixel"] = [
        s["batch_policy"]["seconds_per_megapixel"] for s in model["per_replica"].values()
    ]
    print(f"  model deployment: {summary}", flush=True)
    return runs, summary, cpu


def replica_rates(bare: list[BareResult]) -> dict[int, float]:
    """Misses a second one CPU model replica makes, by side: this run's bare 1x1 bf16 figures
    (measured now if the run skipped them)."""
    found = {
        r.side: r.images_per_s
        for r in bare
        if (r.processes, r.threads, r.precision, r.batch) == (1, 1, "bf16", 1)
    }
    if len(found) < 2:
        cells = [("bf16", side, 1) for side in (256, 512)]
        found = {r.side: r.images_per_s for r in measure(cells, processes=1, threads=1, seconds=2)}
    return found


def _stats(url: str) -> dict[str, Any]:
    import httpx

    stats: dict[str, Any] = httpx.get(url + "/v1/stats", timeout=10).json()
    return stats


# -- report ------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer bare cells")
    parser.add_argument("--skip-bare", action="store_true")
    options = parser.parse_args()
    seconds = 6.0 if options.quick else 12.0
    print(f"machine: {machine()}", flush=True)

    bare: list[BareResult] = []
    if not options.skip_bare:
        print("bare model ceiling", flush=True)
        precisions = ["fp32", "bf16"]
        cells = [(p, 256, b) for p in precisions for b in (1, 2, 4, 8)]
        cells += [(p, 512, b) for p in precisions for b in ((1, 2) if options.quick else (1, 2, 4))]
        for processes, threads in ((1, 1), (1, 2), (2, 1)):
            chosen = cells if processes * threads == 2 else [c for c in cells if c[2] == 1]
            for result in measure(
                chosen, processes=processes, threads=threads, seconds=2.0 if options.quick else 3.0
            ):
                bare.append(result)
                print(
                    f"  {result.processes}x{result.threads} {result.precision} {result.side}px "
                    f"batch {result.batch}: {result.images_per_s:6.2f} img/s "
                    f"({result.ms_per_batch:7.1f} ms/batch)",
                    flush=True,
                )

    from deployments.core.settings import OFFICIAL_STYLES
    from deployments.core.weights import write_seeded

    with tempfile.TemporaryDirectory() as folder:
        weights_dir = Path(folder)
        write_seeded(weights_dir, list(OFFICIAL_STYLES))
        cold = cold_start_s(weights_dir)
        print(f"cold start (serve run to first picture): {cold:.1f} s", flush=True)
        print("served (HTTP, closed loop)", flush=True)
        url = start_cluster()
        try:
            served, stats, cpu = served_scenarios(url, weights_dir, seconds=seconds)
            print("the cache actor's ceiling", flush=True)
            ceilings = cache_ceiling.measure(seconds=3.0 if options.quick else 5.0)
        finally:
            stop_cluster()
    text, chart = render(machine(), bare, served, stats, cold, cpu)
    path = ROOT / "benchmarks" / "RESULTS.md"
    results = replace_section(path.read_text() if path.exists() else "", "bench", text)
    path.write_text(
        replace_section(results, "cache", cache_ceiling.report(ceilings, replica_rates(bare)))
    )
    chart.save(ROOT / "benchmarks" / "throughput.png")
    print(text)


if __name__ == "__main__":
    main()
