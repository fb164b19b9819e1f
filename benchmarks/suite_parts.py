"""What the test suite's fixed costs are on this machine: the session cluster's start, the app's
deploy with and without its start-up batch curve, and one side app (tests/conftest.py's
`deploy_side_app`), each in wall seconds and in CPU seconds of the whole machine.

Usage: python -m benchmarks.suite_parts
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from benchmarks.common import ROOT, start_cluster, stop_cluster, wait_healthy

T = TypeVar("T")


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent so far (user, nice, system, irq, softirq)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / 100


def timed(label: str, step: Callable[[], T]) -> T:
    """`step()`'s result, its wall and CPU seconds printed."""
    cpu, start = machine_cpu_s(), time.perf_counter()
    result = step()
    print(f"{label}: {time.perf_counter() - start:.1f} s, {machine_cpu_s() - cpu:.1f} CPU-s")
    return result


def main() -> None:
    from ray import serve

    from deployments.app import APP_NAME, from_config
    from deployments.core.settings import OFFICIAL_STYLES, Settings
    from deployments.core.weights import write_seeded
    from tests.conftest import SERVICE_ARGS, Service, deploy_side_app

    weights_dir = Path(tempfile.mkdtemp())
    write_seeded(weights_dir, list(OFFICIAL_STYLES))
    url = timed("cluster and Serve", lambda: start_cluster(metrics_report_s=1.0))
    try:
        for name, adaptive in (("app, with its batch curve", True), ("app, no curve", False)):
            app = from_config(
                ROOT / "serve_config.yaml",
                weights_dir=weights_dir,
                **{**SERVICE_ARGS, "adaptive_batching": adaptive},
            )
            timed(name, functools.partial(serve.run, app, name=APP_NAME, route_prefix="/"))
            wait_healthy(url + "/healthz")
            timed("its delete", lambda: serve.delete(APP_NAME))
        settings = Settings(
            precision="fp32",
            weights_dir=weights_dir,
            styles=["paprika"],
            adaptive_batching=False,
            max_batch_size=1,
        )
        service = Service(url, weights_dir)
        timed("a side app", lambda: deploy_side_app(service, "side", settings))
        timed("its delete", lambda: serve.delete("side"))
    finally:
        timed("cluster stop", stop_cluster)


if __name__ == "__main__":
    main()
