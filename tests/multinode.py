"""A two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`) running the app.

Run by tests/test_serve_multinode.py in its own process (a process holds one Ray cluster, and
the test session already has one). Prints one JSON report on its last line.
The cache is two shards (two actors) with a Redis tier behind them.
Usage: python -m tests.multinode WEIGHTS_DIR PORT REDIS_URL
"""

from __future__ import annotations

import json
import sys
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


@ray.remote(num_cpus=0)
def stylize_from_here(image: bytes) -> tuple[str, int]:
    """Call the app through a handle from whichever node this task was placed on."""
    body = serve.get_app_handle(APP_NAME).stylize.remote(image, style="paprika", size=32).result()
    return ray.get_runtime_context().get_node_id(), len(body)


def on(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


def main(weights_dir: str, port: int, redis_url: str) -> dict[str, Any]:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        assert cluster.head_node is not None
        head_id, worker_id = cluster.head_node.node_id, worker.node_id
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
        }
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
