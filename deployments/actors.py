"""The cluster's named actors: one of each, found by name from any replica on any node, and the
one convention for calling them: a refusal comes back as it is, any failure as `ActorDown`."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from .core.errors import AnimeGANError

NAMESPACE = "animegan"
# Ray sends an argument or result over 100 KiB through the node's object store (a put, the
# raylet, a get); our results and most uploads are 0.1-1 MiB, and measured, sending them in the
# call itself costs the whole machine less. The variable applies per process: to ours.
# Buffers of 1 MiB and more (uploads, results) are mapped on their own, so freeing one gives its
# memory back: with glibc's moving threshold, 10 MB uploads land in the heap and a replica that
# held a full line of them kept its peak after the line drained (measured in `make soak`).
INLINE_OBJECTS = {
    "env_vars": {
        "RAY_max_direct_call_object_size": str(1 << 20),
        "MALLOC_MMAP_THRESHOLD_": str(1 << 20),
    }
}


class ActorDown(Exception):
    """A named actor did not answer in time, is restarting, or is gone (`died`: for good)."""

    def __init__(self, reason: str, *, died: bool) -> None:
        super().__init__(reason)
        self.died = died


def named_actor(actor_class: Any, name: str, *args: Any) -> ray.actor.ActorHandle:
    """The actor called `name`, created (detached, so it outlives its creator) if missing."""
    return actor_class.options(
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        runtime_env=INLINE_OBJECTS,
        # As Serve does for its own actors: a call's events for the dashboard's task list cost
        # the caller, the actor and the GCS on every call; ours are made per request.
        enable_task_events=False,
    ).remote(*args)


async def ask(ref: ray.ObjectRef, timeout_s: float | None) -> Any:
    """The answer of an actor call: its refusal (an `AnimeGANError`) raised as it is, any
    failure of the actor or of the call (`timeout_s` passed) as `ActorDown`."""
    try:
        return await asyncio.wait_for(ref, timeout_s)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, AnimeGANError):
            raise exc.cause from None
        raise ActorDown(type(exc).__name__, died=False) from exc
    except (TimeoutError, ray.exceptions.RayError) as exc:
        died = isinstance(exc, ray.exceptions.ActorDiedError)
        raise ActorDown(type(exc).__name__, died=died) from exc
