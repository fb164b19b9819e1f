"""Shared fixtures: seeded weights on disk, real photos, a local HTTP file server."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr

from benchmarks.common import free_port, start_cluster, stop_cluster, wait_healthy
from deployments.core.settings import OFFICIAL_STYLES, Settings
from deployments.core.weights import write_seeded
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
SHARED_PHOTOS = ROOT.parent / "shared" / "photos"


@pytest.fixture(scope="session")
def seeded_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All four official styles as seeded stand-ins (seeds 0..3)."""
    folder = tmp_path_factory.mktemp("weights")
    write_seeded(folder, list(OFFICIAL_STYLES))
    return folder


@pytest.fixture
def settings(seeded_weights_dir: Path) -> Settings:
    return Settings(weights_dir=seeded_weights_dir, precision="fp32")


@pytest.fixture(scope="session")
def photo_bytes() -> bytes:
    """A real photograph when ../shared is beside the checkout, else a made-up picture."""
    photo = SHARED_PHOTOS / "kimono-street.jpg"
    if photo.is_file():
        return photo.read_bytes()
    return jpeg_bytes(smooth_picture(640, 427))


def smooth_picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic (H, W, 3) uint8 picture with gradients and a little noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [xx / max(width - 1, 1), yy / max(height - 1, 1), (xx + yy) / (width + height)], -1
    )
    noisy = base * 220 + rng.normal(0, 8, base.shape) + 16
    return np.clip(noisy, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, **save: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=92, **save)
    return out.getvalue()


def png_bytes(image: Image.Image, **save: object) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", **save)
    return out.getvalue()


class FileServer:
    """A real HTTP server on 127.0.0.1 serving bytes by path; `cut` paths stop half-way."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        files, cut = self.files, self.cut

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in cut:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


CLUSTER_MODULES = ("test_serve_", "test_page")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what needs a Ray cluster or the browser, so `pytest -m "not cluster"` runs the rest,
    and run the rest first: tests/multinode.py runs beside them (see `two_nodes`)."""
    for item in items:
        if item.path.name.startswith(CLUSTER_MODULES):
            item.add_marker(pytest.mark.cluster)
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)  # stable


class TwoNodes:
    """tests/multinode.py in a process of its own (a process holds one Ray cluster, and it runs
    a two-node one), with the redis-server it is given."""

    def __init__(self, weights_dir: Path, folder: Path) -> None:
        self.redis = RedisServer(folder).start()
        self.stdout, self.stderr = folder / "stdout", folder / "stderr"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            arguments = [str(weights_dir), str(free_port()), self.redis.url()]
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.multinode", *arguments],
                cwd=ROOT,
                stdout=out,
                stderr=err,
            )

    def wait(self) -> None:
        self.process.wait(timeout=540)

    def report(self) -> dict:
        """Its findings: the JSON on its last line."""
        self.wait()
        assert self.process.returncode == 0, self.stderr.read_text()[-4000:]
        return json.loads(self.stdout.read_text().strip().splitlines()[-1])

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.redis.kill()


@pytest.fixture(scope="session", autouse=True)
def two_nodes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwoNodes | None]:
    """tests/multinode.py, started with the session when its tests are to run: it runs beside
    the tests that need no cluster (they come first), and the session's cluster waits for it
    to end (a `ray.init()` beside its cluster would join it)."""
    if not any(item.path.name == "test_serve_multinode.py" for item in request.session.items):
        yield None
        return
    weights_dir = request.getfixturevalue("seeded_weights_dir")
    two_nodes = TwoNodes(weights_dir, tmp_path_factory.mktemp("multinode"))
    try:
        yield two_nodes
    finally:
        two_nodes.stop()


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the defaults, not whatever ANIMEGAN_* the developer's shell exports."""
    import os

    for name in [n for n in os.environ if n.startswith("ANIMEGAN_")]:
        monkeypatch.delenv(name)


# -- a real Ray cluster with the real application ---------------------------------------------


@dataclass(frozen=True)
class Service:
    """The `animegan` app deployed on the session's local cluster, as serve_config.yaml says."""

    url: str
    weights_dir: Path


SERVICE_ARGS: dict[str, Any] = {
    "precision": "fp32",  # so outputs can be compared with the reference port
    "max_upload_bytes": 4 * 1024 * 1024,
    "request_timeout_s": 30,
}


@pytest.fixture(scope="session")
def service(seeded_weights_dir: Path, two_nodes: TwoNodes | None) -> Iterator[Service]:
    from ray import serve

    from deployments.app import APP_NAME, from_config

    if two_nodes is not None:
        two_nodes.wait()
    url = start_cluster(metrics_report_s=1.0)
    try:
        app = from_config(
            ROOT / "serve_config.yaml", weights_dir=seeded_weights_dir, **SERVICE_ARGS
        )
        serve.run(app, name=APP_NAME, route_prefix="/")
        service = Service(url, seeded_weights_dir)
        wait_healthy(service.url + "/healthz")
        yield service
    finally:
        stop_cluster()


API_KEY = "test-key-0123456789abcdef"


def deploy_side_app(
    service: Service,
    name: str,
    settings: Settings,
    *,
    model_options: dict | None = None,
    ingress_replicas: int = 1,
) -> str:
    """`settings` as a second app at /<name> on the session cluster: one model replica, no CPU.
    It lives as long as the cluster: stopping that removes every app at once (deleting each
    app in turn took ~18 s)."""
    from ray import serve

    from deployments.app import compose

    actor = {"num_cpus": 0}
    app = compose(
        settings,
        deployment_options={
            "StyleModel": {"num_replicas": 1, "ray_actor_options": actor, **(model_options or {})},
            "Ingress": {"num_replicas": ingress_replicas, "ray_actor_options": actor},
        },
    )
    serve.run(app, name=name, route_prefix=f"/{name}")
    url = f"{service.url}/{name}"
    wait_healthy(url + "/healthz")
    return url


EXAMPLE_PICTURES = {
    f"example{i}.jpg": jpeg_bytes(smooth_picture(80, 60, seed=7900 + i)) for i in (0, 1)
}


@pytest.fixture(scope="session")
def examples_app(service: Service, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second app with two example pictures in `examples_dir`, warmed at start-up (one style)."""
    folder = tmp_path_factory.mktemp("examples")
    for name, data in EXAMPLE_PICTURES.items():
        (folder / name).write_bytes(data)
    (folder / "readme.txt").write_text("not a picture: left out")
    settings = Settings(
        precision="fp32",
        weights_dir=service.weights_dir,
        styles=["paprika"],
        examples_dir=folder,
        adaptive_batching=False,  # no batch curve to measure at start: it starts faster
        max_batch_size=1,
    )
    return deploy_side_app(service, "examples", settings)


@pytest.fixture(scope="session")
def locked_service(service: Service) -> str:
    """A second app that asks for `API_KEY` (one style)."""
    settings = Settings(
        precision="fp32",
        weights_dir=service.weights_dir,
        styles=["paprika"],
        api_key=SecretStr(API_KEY),
        adaptive_batching=False,
        max_batch_size=1,
    )
    return deploy_side_app(service, "locked", settings)


@pytest.fixture(scope="session")
def damaged_service(service: Service, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A second app whose paprika weights file is cut short (celeba_distill is intact)."""
    folder = tmp_path_factory.mktemp("damaged")
    for name in ("paprika", "celeba_distill"):
        shutil.copy(service.weights_dir / f"{name}.pt", folder / f"{name}.pt")
    data = (folder / "paprika.pt").read_bytes()
    (folder / "paprika.pt").write_bytes(data[: len(data) * 2 // 3])  # an interrupted copy
    settings = Settings(
        precision="fp32",
        weights_dir=folder,
        styles=["paprika", "celeba_distill"],
        adaptive_batching=False,
        max_batch_size=1,
    )
    return deploy_side_app(service, "damaged", settings)


@pytest.fixture(scope="session")
def crowd(service: Service) -> str:
    """A second app with one slot (one model replica taking one request at a time) and two
    ingress replicas: jobs queue, and go through either replica."""
    settings = Settings(
        precision="fp32",
        weights_dir=service.weights_dir,
        styles=["paprika"],
        adaptive_batching=False,
        max_batch_size=1,
        max_queued_jobs=12,
        max_jobs_per_client=8,
    )
    return deploy_side_app(
        service,
        "crowd",
        settings,
        model_options={"max_ongoing_requests": 1},
        ingress_replicas=2,
    )


def ray_log_files() -> list[Path]:
    """Every log file of the session cluster's node, as they are now."""
    import ray

    node = ray._private.worker._global_node
    assert node is not None
    return [p for p in Path(node.get_logs_dir_path()).rglob("*") if p.is_file()]
