"""What the benchmarks, the soak and the tests share: photos, the cluster, the apps, the machine."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import random
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT.parent / "shared" / "photos"
# The seed article's design, in this app: fp32, fixed batches of 4 with a 1 s wait, no cache.
NAIVE_ARGS = {
    "precision": "fp32",
    "adaptive_batching": False,
    "max_batch_size": 4,
    "batch_wait_timeout_s": 1.0,
    "cache_max_bytes": 0,
    "local_cache_max_bytes": 0,
}
NAIVE_OPTIONS = {
    "StyleModel": {
        "num_replicas": 1,
        "max_ongoing_requests": 8,
        "max_queued_requests": -1,
        "ray_actor_options": {"num_cpus": 0},  # one process, torch's default threads
    },
    "Ingress": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
}


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

    def large(self, count: int) -> list[bytes]:
        """JPEGs of 5-15 MB: photos enlarged to 2000-3200 px, with grain that JPEG keeps."""
        rng = np.random.default_rng(self.rng.randrange(1 << 30))
        out = []
        for _ in range(count):
            side = self.rng.randrange(2000, 3200)
            image = self.rng.choice(self.images).resize((side, side * 3 // 4))
            pixels = np.asarray(image).astype(np.int16) + rng.integers(
                -40, 41, (side * 3 // 4, side, 3)
            )
            buffer = io.BytesIO()
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                buffer, "JPEG", quality=97, subsampling=0
            )
            out.append(buffer.getvalue())
        return out


def _made_up() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (900, 1280, 3), dtype=np.uint8))


def distinct(bodies: list[bytes], index: int) -> bytes:
    """The index-th distinct upload: bytes after a JPEG's end change the key, not the picture."""
    return bodies[index % len(bodies)] + index.to_bytes(8, "big")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_healthy(url: str, timeout_s: float = 180) -> None:
    """Until `url` answers 200 (a `/healthz`, say)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 in {timeout_s} s")


def start_cluster(*, metrics_report_s: float | None = None) -> str:
    """A local 2-CPU Ray cluster with Serve on a free loopback port; its URL.

    `metrics_report_s`: how often processes send their metrics to the node's endpoint (Ray's
    default is 10 s; the Prometheus test wants them sooner).
    """
    import ray
    from ray import serve

    system = (
        {}
        if metrics_report_s is None
        else {"metrics_report_interval_ms": int(metrics_report_s * 1e3)}
    )
    ray.init(
        address="local",  # a new one, even where another cluster of this machine is running
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _system_config=system,
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}"


def stop_cluster() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def deploy_ours(url: str, weights_dir: Path) -> None:
    """The app as serve_config.yaml describes it, at /."""
    from ray import serve

    from deployments.app import from_config

    app = from_config(ROOT / "serve_config.yaml", weights_dir=weights_dir)
    serve.run(app, name="animegan", route_prefix="/")
    wait_healthy(url + "/healthz")


@contextlib.contextmanager
def served_app() -> Iterator[tuple[str, Path]]:
    """Our app on a fresh local cluster with seeded weights: (its URL, the weights' folder)."""
    from deployments.core.settings import OFFICIAL_STYLES
    from deployments.core.weights import write_seeded

    with tempfile.TemporaryDirectory() as folder:
        weights_dir = Path(folder)
        write_seeded(weights_dir, list(OFFICIAL_STYLES))
        url = start_cluster()
        try:
            deploy_ours(url, weights_dir)
            yield url, weights_dir
        finally:
            stop_cluster()


def deploy_naive(url: str, weights_dir: Path) -> None:
    """The seed article's design rebuilt in the same app, at /naive."""
    from ray import serve

    from deployments.app import compose
    from deployments.core.settings import Settings

    settings = Settings(weights_dir=weights_dir, **NAIVE_ARGS)  # type: ignore[arg-type]
    serve.run(
        compose(settings, deployment_options=NAIVE_OPTIONS), name="naive", route_prefix="/naive"
    )
    wait_healthy(url + "/naive/healthz")


def deploy_echo() -> None:
    """A bare Starlette echo behind the Serve proxy, at /echo: the ceiling of any cache hit."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import Response

    @serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
    class Echo:
        async def __call__(self, request: Request) -> Response:
            return Response(await request.body(), media_type="application/octet-stream")

    serve.run(Echo.bind(), name="echo", route_prefix="/echo")  # type: ignore[attr-defined]


def machine() -> str:
    """CPU model, cores, and the versions that matter to the figures."""
    import ray
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor(),
    )
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, ray {ray.__version__}, native bf16: {bf16}"
    )
