"""The model replicas' counters, as they report them, and the cluster-wide view built from them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

Snapshot = dict[str, Any]  # one replica's `StyleModel.stats()`


class ReplicaStats:
    """The latest snapshot of each model replica that reported within `fresh_s`."""

    def __init__(
        self, *, fresh_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fresh_s = fresh_s  # a replica silent for longer is gone (or replaced)
        self.clock = clock
        self._latest: dict[str, tuple[float, Snapshot]] = {}

    def report(self, replica: str, snapshot: Snapshot) -> None:
        self._latest[replica] = (self.clock(), snapshot)

    def fresh(self) -> dict[str, Snapshot]:
        now = self.clock()
        self._latest = {r: v for r, v in self._latest.items() if now - v[0] < self.fresh_s}
        return {replica: snapshot for replica, (_, snapshot) in self._latest.items()}


def summarize(replicas: dict[str, Snapshot]) -> dict[str, Any]:
    """The `model` section of `/v1/stats`: totals over the replicas, then each replica."""
    histogram: Counter[str] = Counter()
    for snapshot in replicas.values():
        histogram.update(snapshot["batch_sizes"])
    return {
        "replicas": len(replicas),
        "calls": sum(s["calls"] for s in replicas.values()),
        "inferences": sum(s["inferences"] for s in replicas.values()),
        "batches": sum(s["batches"] for s in replicas.values()),
        "batch_sizes": dict(sorted(histogram.items(), key=lambda kv: int(kv[0]))),
        "batch_caps": [s["batch_policy"]["cap"] for s in replicas.values()],
        "queue_depths": [s["queue_depth"] for s in replicas.values()],
        "per_replica": replicas,
    }
