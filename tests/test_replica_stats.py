"""The model replicas' counters: freshness and the cluster-wide summary, in-process."""

from __future__ import annotations

from deployments.core.replica_stats import ReplicaStats, summarize


def snapshot(inferences: int, sizes: dict[str, int], cap: int, depth: int) -> dict[str, object]:
    return {
        "node": "n",
        "calls": inferences,
        "inferences": inferences,
        "batches": sum(sizes.values()),
        "batch_sizes": sizes,
        "queue_depth": depth,
        "precision": "bf16",
        "batch_policy": {"cap": cap},
    }


def test_a_replica_silent_for_longer_than_the_window_drops_out() -> None:
    now = [0.0]
    stats = ReplicaStats(fresh_s=60, clock=lambda: now[0])
    stats.report("a", snapshot(1, {"1": 1}, 1, 0))
    now[0] = 30
    stats.report("b", snapshot(2, {"1": 2}, 1, 0))
    assert sorted(stats.fresh()) == ["a", "b"]
    now[0] = 61
    assert sorted(stats.fresh()) == ["b"]


def test_the_summary_adds_up_the_replicas() -> None:
    replicas = {"a": snapshot(5, {"1": 3, "2": 1}, 2, 1), "b": snapshot(4, {"1": 2, "10": 0}, 1, 0)}
    summary = summarize(replicas)
    assert summary["replicas"] == 2 and summary["inferences"] == 9 and summary["batches"] == 6
    assert summary["calls"] == 9
    assert summary["batch_sizes"] == {"1": 5, "2": 1, "10": 0}
    assert summary["batch_caps"] == [2, 1] and summary["queue_depths"] == [1, 0]
    assert summary["per_replica"] == replicas


def test_no_replicas_summarize_to_zeros() -> None:
    assert summarize({}) == {
        "replicas": 0,
        "calls": 0,
        "inferences": 0,
        "batches": 0,
        "batch_sizes": {},
        "batch_caps": [],
        "queue_depths": [],
        "per_replica": {},
    }
