"""The cluster's named actors: one of each, found by name from any replica on any node."""

from __future__ import annotations

from typing import Any

import ray

NAMESPACE = "animegan"
# Ray sends an argument or result over 100 KiB through the node's object store (a put, the
# raylet, a get); our results and most uploads are 0.1-1 MiB, and measured, sending them in the
# call itself costs the whole machine less. The variable applies per process: to ours.
INLINE_OBJECTS = {"env_vars": {"RAY_max_direct_call_object_size": str(1 << 20)}}


def named_actor(actor_class: Any, name: str, *args: Any) -> ray.actor.ActorHandle:
    """The actor called `name`, created (detached, so it outlives its creator) if missing."""
    return actor_class.options(
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        runtime_env=INLINE_OBJECTS,
    ).remote(*args)
