"""Where model replicas post their counters, so `/v1/stats` sees the whole cluster."""

from __future__ import annotations

from typing import Any

import ray

from .actors import named_actor
from .core.replica_stats import ReplicaStats, Snapshot

REPLICA_STATS_ACTOR_NAME = "animegan-replica-stats"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class ReplicaStatsActor:
    """A thin actor around `ReplicaStats`."""

    def __init__(self) -> None:
        self.stats = ReplicaStats()

    def report(self, replica: str, snapshot: Snapshot) -> None:
        self.stats.report(replica, snapshot)

    def fresh(self) -> dict[str, Snapshot]:
        return self.stats.fresh()


def replica_stats_actor() -> Any:
    return named_actor(ReplicaStatsActor, REPLICA_STATS_ACTOR_NAME)
