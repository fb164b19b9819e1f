"""A two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): `animegan-serve
convert` on it, then the app.

Run for tests/test_serve_multinode.py in its own process, started with the test session
(conftest's `two_nodes`; a process holds one Ray cluster). Prints one JSON report on its last
line.
`convert` runs twice as a user runs it, as a command: interrupted by a Ctrl-C after its first
result, then to the end with `--redis`. The app's cache is two shards (two actors) with the
same Redis behind them, and it is asked for a picture of each run.
Usage: python -m tests.multinode WEIGHTS_DIR PORT REDIS_URL
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import ray
from pydantic import SecretStr
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from benchmarks.common import wait_healthy
from deployments.actors import NAMESPACE
from deployments.app import APP_NAME, compose
from deployments.cache import shard_name
from deployments.core.settings import Settings
from deployments.model import REPORT_EVERY_S
from tests.conftest import jpeg_bytes, smooth_picture

CONVERT_SIZE = 128
# Enough pictures that a Ctrl-C after the first result lands well before the last.
GOOD = [f"a/b/deep {i}.jpg" for i in range(16)] + [
    *(f"sp ace/ünï cødé {i}.jpg" for i in range(16)),
    *(f"日本/写真 {i}.jpg" for i in range(16)),
]
BAD = {"a/broken.jpg": b"", "a/notes.jpg": b"not a picture\n", "empty.png": b""}
CLASH = "a/b/deep 0.png"  # its result's name is deep 0.jpg's
IGNORED = {".hidden.jpg": b"", "readme.txt": b"text", "a/.cache/x.jpg": b""}


@ray.remote(num_cpus=0)
def stylize_from_here(image: bytes) -> tuple[str, int]:
    """Call the app through a handle from whichever node this task was placed on."""
    body = serve.get_app_handle(APP_NAME).stylize.remote(image, style="paprika", size=32).result()
    return ray.get_runtime_context().get_node_id(), len(body)


def on(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def library(source: Path) -> dict[str, bytes]:
    """A folder tree to convert: the good pictures' bytes by relative path."""
    good = {name: jpeg_bytes(smooth_picture(160, 120, seed=500 + i)) for i, name in enumerate(GOOD)}
    broken = jpeg_bytes(smooth_picture(160, 120, seed=1))[:300]  # a download cut short
    files = {**good, **BAD, "a/broken.jpg": broken, CLASH: good["a/b/deep 0.jpg"], **IGNORED}
    for name, data in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(data)
    return good


def results(target: Path) -> list[str]:
    """Every result file below `target`, relative, and whether each decodes whole."""
    from PIL import Image

    found = []
    for path in sorted(target.rglob("*.png")):
        with Image.open(path) as image:
            image.load()  # a partial file fails here
        found.append(str(path.relative_to(target)))
    return found


def convert_twice(address: str, weights_dir: str, redis_url: str) -> dict[str, Any]:
    """`convert` interrupted after its first result, then again to the end with `--redis`."""
    root = Path(tempfile.mkdtemp())
    source, target = root / "library", root / "anime"
    good = library(source)
    env = {
        **os.environ,
        "ANIMEGAN_WEIGHTS_DIR": weights_dir,
        "ANIMEGAN_PRECISION": "fp32",
        "ANIMEGAN_STYLES": '["paprika"]',
        "ANIMEGAN_DEFAULT_STYLE": "paprika",
    }
    cli = str(Path(sys.executable).parent / "animegan-serve")
    command = [cli, "convert", str(source), str(target), "--size", str(CONVERT_SIZE)]
    command += ["--address", address]
    # A shell's background job ignores SIGINT, and a command it starts would too: a handler of
    # its own here is reset to the default in the child, which Python then turns into Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(target.rglob("*.png")) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    _, first_err = first.communicate(timeout=60)
    interrupted = {
        "code": first.returncode,
        "last_lines": first_err.strip().splitlines()[-2:],
        "results": results(target),
        "partial_left": [p.name for p in target.glob(".partial*")],
    }
    time.sleep(1)  # pool actors still finishing a call when it exited write nothing
    interrupted["results_later"] = results(target)
    second = subprocess.run(
        [*command, "--redis", redis_url], env=env, capture_output=True, text=True, timeout=300
    )
    failures = (target / "failures.jsonl").read_text().splitlines()
    return {
        "good": sorted(good),
        "interrupted": interrupted,
        "second": {
            "code": second.returncode,
            "last_lines": second.stderr.strip().splitlines()[-2:],
            "results": results(target),
            "failures": [json.loads(line) for line in failures],
            "partial_left": (target / ".partial").exists(),
        },
        "source": str(source),
        "target": str(target),
    }


def asked_of_service(url: str, converted: dict[str, Any]) -> dict[str, Any]:
    """The app's answers for a picture of the interrupted run (never in Redis: computed) and of
    the second run (written to Redis by it), each beside `convert`'s result file."""
    source, target = Path(converted["source"]), Path(converted["target"])
    first_run = set(converted["interrupted"]["results"])
    second_run = [name for name in converted["second"]["results"] if name not in first_run]
    answers = {}
    picks = {"first": sorted(first_run)[:1], "second": second_run[:1]}  # none: a test says why
    for which, result in ((which, name) for which, names in picks.items() for name in names):
        upload = (source / result).with_suffix(".jpg").read_bytes()
        answer = httpx.post(
            f"{url}/v1/stylize",
            content=upload,
            params={"style": "paprika", "size": CONVERT_SIZE},
            timeout=60,
        )
        answers[which] = {
            "status": answer.status_code,
            "cache": answer.headers.get("x-cache"),
            "same_bytes": answer.content == (target / result).read_bytes(),
        }
    return answers


def main(weights_dir: str, port: int, redis_url: str) -> dict[str, Any]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        assert cluster.head_node is not None
        head_id, worker_id = cluster.head_node.node_id, worker.node_id
        converted = convert_twice(cluster.address, weights_dir, redis_url)  # its CPUs are free
        # One proxy: both "nodes" share this machine's ports.
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        settings = Settings(
            precision="fp32",
            weights_dir=Path(weights_dir),
            styles=["paprika"],
            adaptive_batching=False,
            max_batch_size=1,
            cache_shards=2,
            cache_redis_url=SecretStr(redis_url),
        )
        serve.run(
            compose(
                settings,
                deployment_options={
                    "StyleModel": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 1}},
                    "Ingress": {"num_replicas": 2, "ray_actor_options": {"num_cpus": 0}},
                },
            ),
            name=APP_NAME,
            route_prefix="/",
        )
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url + "/healthz")

        image = jpeg_bytes(smooth_picture(64, 48, seed=4242))
        callers = [  # one after the other: the head's call finds the worker's result cached
            ray.get(
                stylize_from_here.options(scheduling_strategy=on(node)).remote(image), timeout=120
            )
            for node in (worker_id, head_id)
        ]
        # Distinct pictures over HTTP, all at once, so both model replicas work: one at a time,
        # the router may send every one to the same idle replica.
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = pool.map(
                lambda i: httpx.post(
                    f"{url}/v1/stylize",
                    content=jpeg_bytes(smooth_picture(64, 48, seed=i)),
                    params={"style": "paprika", "size": 32},
                    timeout=60,
                ),
                range(8),
            )
            for answer in answers:
                answer.raise_for_status()
        time.sleep(REPORT_EVERY_S + 0.5)  # the replicas' last counters reach the line by then
        stats = httpx.get(f"{url}/v1/stats", timeout=10).json()
        named = [
            (a["namespace"], a["name"]) for a in ray.util.list_named_actors(all_namespaces=True)
        ]

        from_service = asked_of_service(url, converted)

        cluster.remove_node(worker)  # a node goes away: the head's replica keeps serving
        after_loss = [
            httpx.post(
                f"{url}/v1/stylize",
                content=jpeg_bytes(smooth_picture(64, 48, seed=90 + i)),
                params={"style": "paprika", "size": 32},
                timeout=60,
            ).status_code
            for i in range(4)
        ]
        return {
            "nodes": {"head": head_id, "worker": worker_id},
            "callers": [node for node, _ in callers],
            "result_sizes": [size for _, size in callers],
            "model_nodes": sorted(r["node"] for r in stats["model"]["per_replica"].values()),
            "model_inferences": {
                r["node"]: r["inferences"] for r in stats["model"]["per_replica"].values()
            },
            "cache": stats["cache"],
            "cache_actors": [
                shard_name(i) for i in range(4) if (NAMESPACE, shard_name(i)) in named
            ],
            "after_worker_loss": after_loss,
            "converted": converted,
            "from_service": from_service,
        }
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
