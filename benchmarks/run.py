"""`make bench`: the bare model, the served app, the seed-like naive app and a Serve echo, side by side.

Everything runs in one go on this machine, prints a table with the target ratios, and writes
benchmarks/RESULTS.md plus benchmarks/throughput.png. Usage: python benchmarks/run.py [--quick]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bare import BareResult, measure  # noqa: E402
from benchmarks.loadgen import LoadResult, run_load  # noqa: E402
from benchmarks.procs import cpu_s, ray_processes  # noqa: E402

PHOTOS = ROOT.parent / "shared" / "photos"
NAIVE_ARGS = {  # the seed article's design, in this app: fp32, fixed batches of 4 with a 1 s wait
    "precision": "fp32", "adaptive_batching": False, "max_batch_size": 4,
    "batch_wait_timeout_s": 1.0, "cache_max_bytes": 0, "local_cache_max_bytes": 0,
}
NAIVE_OPTIONS = {
    "StyleModel": {"num_replicas": 1, "max_ongoing_requests": 8, "max_queued_requests": -1,
                   "ray_actor_options": {"num_cpus": 0}},  # one process, default threads (2)
    "Ingress": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
}


# -- payloads ----------------------------------------------------------------------------------------


class Photos:
    """Unique JPEG crops of real photos (or of a made-up picture where ../shared is absent)."""

    def __init__(self, seed: int) -> None:
        sources = sorted(PHOTOS.glob("*.jpg")) if PHOTOS.is_dir() else []
        self.images = [Image.open(p).convert("RGB") for p in sources] or [_made_up()]
        self.rng = random.Random(seed)

    def unique(self, count: int, *, width: int = 600, height: int = 600) -> list[bytes]:
        out = []
        for _ in range(count):
            image = self.rng.choice(self.images)
            left = self.rng.randrange(0, max(1, image.width - width))
            top = self.rng.randrange(0, max(1, image.height - height))
            crop = image.crop((left, top, left + width, top + height))
            buffer = io.BytesIO()
            crop.save(buffer, "JPEG", quality=self.rng.randrange(85, 95))
            out.append(buffer.getvalue())
        return out


def _made_up() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (900, 1280, 3), dtype=np.uint8))


# -- the cluster ---------------------------------------------------------------------------------------


def start_cluster(weights_dir: Path) -> str:
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"ANIMEGAN_WEIGHTS_DIR": str(weights_dir)}})
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def deploy_ours(url: str) -> None:
    from ray import serve

    from deployments.app import from_config

    serve.run(from_config(ROOT / "serve_config.yaml"), name="animegan", route_prefix="/")
    _wait(url + "/healthz")


def deploy_naive(url: str, weights_dir: Path) -> None:
    from ray import serve

    from deployments.app import compose
    from deployments.core.settings import Settings

    settings = Settings(weights_dir=weights_dir, **NAIVE_ARGS)
    serve.run(compose(settings, deployment_options=NAIVE_OPTIONS), name="naive", route_prefix="/naive")
    _wait(url + "/naive/healthz")


def deploy_echo(url: str) -> None:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
    class Echo:
        async def __call__(self, request: Request) -> Response:
            return Response(await request.body(), media_type="application/octet-stream")

    serve.run(Echo.bind(), name="echo", route_prefix="/echo")


def _wait(url: str, timeout_s: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def cold_start_s(weights_dir: Path, timeout_s: float = 180) -> float:
    """Seconds from `serve run serve_config.yaml` (what `make serve` runs) to the first picture."""
    import signal
    import subprocess

    import httpx

    env = {**os.environ, "ANIMEGAN_WEIGHTS_DIR": str(weights_dir)}
    picture = Photos(seed=2).unique(1)[0]
    start = time.monotonic()
    server = subprocess.Popen([str(Path(sys.executable).with_name("serve")), "run", "serve_config.yaml"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - start < timeout_s:
            try:
                answer = httpx.post("http://127.0.0.1:8000/v1/stylize", content=picture,
                                    params={"size": 256}, timeout=30)
                if answer.status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise TimeoutError("serve run gave no picture in time")
    finally:
        server.send_signal(signal.SIGINT)  # serve run shuts Serve and its Ray cluster down
        server.wait(timeout=60)


# -- scenarios -----------------------------------------------------------------------------------------


def load(url: str, path: str, bodies: list[bytes], params: dict[str, object], *, clients: int,
         seconds: float) -> LoadResult:
    return run_load(url, path, lambda i: (bodies[i % len(bodies)], params), clients=clients,
                    max_requests=len(bodies), max_seconds=seconds)


def served_scenarios(
    url: str, weights_dir: Path, *, seconds: float
) -> tuple[dict[str, LoadResult], dict[str, object], dict[str, float]]:
    photos = Photos(seed=1)
    small = {"style": "paprika", "size": 256}
    square = {"style": "face_paint_512_v2", "size": 512, "crop": "square"}
    runs: dict[str, LoadResult] = {}

    def record(name: str, result: LoadResult) -> None:
        runs[name] = result
        print(f"  {name:<28} {result.throughput:7.2f} req/s  p50 {result.percentile(50):8.1f} ms"
              f"  p99 {result.percentile(99):8.1f} ms  errors {result.errors}", flush=True)

    deploy_ours(url)
    load(url, "/v1/stylize", photos.unique(120), small, clients=8, seconds=seconds)  # warm + scale
    cpu: dict[str, float] = {}
    for clients in (1, 4, 8, 16):
        bodies = photos.unique(int(seconds * 40))
        procs = ray_processes() | {os.getpid(): "load generator (this process)"}
        before = {pid: cpu_s(pid) for pid in procs}
        record(f"ours misses c={clients}", load(url, "/v1/stylize", bodies, small,
                                                clients=clients, seconds=seconds))
        if clients == 8:
            cpu = cpu_per_request(procs, before, runs["ours misses c=8"])
    popular = photos.unique(20)
    load(url, "/v1/stylize", popular, small, clients=4, seconds=seconds * 2)  # fill the cache
    for clients in (1, 8):
        record(f"ours hits c={clients}", load(url, "/v1/stylize", popular * 200, small,
                                              clients=clients, seconds=seconds))
    fresh = photos.unique(int(seconds * 20))
    mix = [popular[i % 20] if i % 5 else fresh[i // 5] for i in range(len(fresh) * 5)]
    record("ours hot mix 80/20 c=8", load(url, "/v1/stylize", mix, small, clients=8, seconds=seconds))
    record("ours 512 square c=8", load(url, "/v1/stylize", photos.unique(200), square,
                                       clients=8, seconds=seconds * 1.5))
    ours_stats = _stats(url)

    deploy_naive(url, weights_dir)
    for clients in (1, 4, 8):
        record(f"naive misses c={clients}", load(url, "/naive/v1/stylize", photos.unique(100),
                                                 small, clients=clients, seconds=seconds))
    record("naive 512 square c=8", load(url, "/naive/v1/stylize", photos.unique(60), square,
                                        clients=8, seconds=seconds * 1.5))
    from ray import serve

    serve.delete("naive")

    deploy_echo(url)
    echo_body = popular[0]
    for clients in (1, 8):
        record(f"echo c={clients}", load(url, "/echo", [echo_body] * 100_000, {},
                                         clients=clients, seconds=seconds))
    model = ours_stats["model"]
    summary = {k: model[k] for k in ("replicas", "batch_sizes", "batch_caps")}
    summary["seconds_per_megapixel"] = [
        s["batch_policy"]["seconds_per_megapixel"] for s in model["per_replica"].values()
    ]
    print(f"  model deployment: {summary}", flush=True)
    return runs, summary, cpu


def cpu_per_request(
    procs: dict[int, str], before: dict[int, float | None], result: LoadResult
) -> dict[str, float]:
    """CPU milliseconds per answered request, by process name (replicas of one name summed)."""
    spent: dict[str, float] = {}
    for pid, name in procs.items():
        after = cpu_s(pid)
        if after is not None and before[pid] is not None:
            spent[name] = spent.get(name, 0.0) + (after - before[pid]) * 1e3 / result.requests
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def _stats(url: str) -> dict:
    import httpx

    return httpx.get(url + "/v1/stats", timeout=10).json()


# -- report --------------------------------------------------------------------------------------------


def machine() -> str:
    import ray
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, ray {ray.__version__}, native bf16: {bf16}")


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
            for result in measure(chosen, processes=processes, threads=threads,
                                  seconds=2.0 if options.quick else 3.0):
                bare.append(result)
                print(f"  {result.processes}x{result.threads} {result.precision} {result.side}px "
                      f"batch {result.batch}: {result.images_per_s:6.2f} img/s "
                      f"({result.ms_per_batch:7.1f} ms/batch)", flush=True)

    from deployments.core.settings import OFFICIAL_STYLES
    from deployments.core.weights import write_seeded

    with tempfile.TemporaryDirectory() as folder:
        weights_dir = Path(folder)
        write_seeded(weights_dir, list(OFFICIAL_STYLES))
        cold = cold_start_s(weights_dir)
        print(f"cold start (serve run to first picture): {cold:.1f} s", flush=True)
        print("served (HTTP, closed loop)", flush=True)
        url = start_cluster(weights_dir)
        try:
            served, stats, cpu = served_scenarios(url, weights_dir, seconds=seconds)
        finally:
            import ray
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    write_report(machine(), bare, served, stats, cold, cpu)


def write_report(
    machine_line: str, bare: list[BareResult], served: dict[str, LoadResult],
    stats: dict[str, object], cold_start: float, cpu: dict[str, float],
) -> None:
    from benchmarks.report import render, replace_section

    text, chart = render(machine_line, bare, served, stats, cold_start, cpu)
    path = ROOT / "benchmarks" / "RESULTS.md"
    old = path.read_text() if path.exists() else ""
    path.write_text(replace_section(old, "bench", text))
    chart.save(ROOT / "benchmarks" / "throughput.png")
    print(text)


if __name__ == "__main__":
    main()
