"""The cluster's named actors: one of each, found by name from any replica on any node."""

from __future__ import annotations

from typing import Any

import ray

NAMESPACE = "animegan"


def named_actor(actor_class: Any, name: str, *args: Any) -> ray.actor.ActorHandle:
    """The actor called `name`, created (detached, so it outlives its creator) if missing."""
    return actor_class.options(
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote(*args)
