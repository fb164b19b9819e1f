"""Two Ray nodes on this machine: `animegan-serve convert` on both; then the app's replicas on
both, one sharded cache and Redis for both, and a node lost."""

from __future__ import annotations

import pytest
from redis import Redis

from tests.conftest import TwoNodes

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def report(two_nodes: TwoNodes) -> dict:
    """tests/multinode.py's findings (started with the session: see conftest's `two_nodes`)."""
    return two_nodes.report()


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


def test_every_result_reached_redis(report: dict, two_nodes: TwoNodes) -> None:
    keys = Redis.from_url(two_nodes.redis.url()).keys("animegan:v1:*")
    warmed = len(report["converted"]["good"]) - len(report["converted"]["interrupted"]["results"])
    # convert's second run, the service's results before the node was lost, its one answer
    # for a picture of convert's first run, and its results after.
    assert len(keys) == warmed + 9 + 1 + 4


# -- `animegan-serve convert` on both nodes ---------------------------------------------------


def test_a_ctrl_c_stops_convert_leaving_only_whole_results(report: dict) -> None:
    interrupted = report["converted"]["interrupted"]
    assert interrupted["code"] == 130
    assert "interrupted" in interrupted["last_lines"][-1]
    # Some results, not all; every one decoded whole (tests/multinode.py opens each).
    assert 0 < len(interrupted["results"]) < len(report["converted"]["good"])
    assert interrupted["partial_left"] == []
    assert interrupted["results_later"] == interrupted["results"]


def test_convert_writes_every_picture_under_its_own_name_and_skips_the_done(report: dict) -> None:
    converted = report["converted"]
    second = converted["second"]
    expected = sorted(name.removesuffix(".jpg") + ".png" for name in converted["good"])
    assert second["results"] == expected  # nested, spaces, unicode; nothing else
    skipped = len(converted["interrupted"]["results"])
    done = len(expected) - skipped
    assert second["last_lines"][0].startswith(f"{done} done, {skipped} skipped, 4 failed")
    assert "on 2 node(s)" in second["last_lines"][0]  # both nodes' actors converted files
    assert not second["partial_left"]


def test_convert_lists_each_bad_file_and_exits_1(report: dict) -> None:
    second = report["converted"]["second"]
    assert second["code"] == 1
    assert "failures.jsonl" in second["last_lines"][-1]
    codes = {failure["path"]: failure["code"] for failure in second["failures"]}
    assert codes == {
        "a/broken.jpg": "invalid_image",
        "empty.png": "invalid_image",
        "a/notes.jpg": "unsupported_format",
        "a/b/deep 0.png": "bad_parameter",  # deep 0.jpg's result has its name
    }
    assert all(failure["message"] for failure in second["failures"])


def test_a_converted_picture_is_the_services_answer_and_warms_its_redis(report: dict) -> None:
    # Not in Redis (the first run had no --redis): the service computes the same bytes.
    assert report["from_service"]["first"] == {"status": 200, "cache": "miss", "same_bytes": True}
    # Written to Redis by the second run: the service answers it as a hit.
    assert report["from_service"]["second"] == {"status": 200, "cache": "hit", "same_bytes": True}
