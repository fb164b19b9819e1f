"""Two Ray nodes on this machine: replicas on both, one sharded cache and Redis for both, and a
node lost."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from benchmarks.common import free_port
from tests.conftest import ROOT
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def report(seeded_weights_dir: Path, redis_server: RedisServer) -> dict:
    """tests/multinode.py's findings (it runs its own cluster, so in its own process)."""
    arguments = [str(seeded_weights_dir), str(free_port()), redis_server.url()]
    done = subprocess.run(
        [sys.executable, "-m", "tests.multinode", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_model_replicas_run_on_both_nodes(report: dict) -> None:
    assert report["model_nodes"] == sorted(report["nodes"].values())
    assert all(count > 0 for count in report["model_inferences"].values())


def test_one_cache_serves_callers_on_both_nodes(report: dict) -> None:
    assert report["callers"] == [report["nodes"]["worker"], report["nodes"]["head"]]
    assert report["result_sizes"][0] == report["result_sizes"][1] > 0
    assert report["cache_actors"] == ["animegan-cache", "animegan-cache-1"]  # two shards
    # The picture asked for from both nodes was computed once: 1 + the 8 distinct HTTP ones.
    assert sum(report["model_inferences"].values()) == 9
    assert report["cache"]["entries"] == 9 and report["cache"]["shards"] == 2


def test_losing_the_worker_node_leaves_the_service_answering(report: dict) -> None:
    assert report["after_worker_loss"] == [200] * 4


def test_every_result_reached_redis(report: dict, redis_server: RedisServer) -> None:
    keys = Redis.from_url(redis_server.url()).keys("animegan:v1:*")
    assert len(keys) == 9 + 4  # the results before the node was lost, and after
