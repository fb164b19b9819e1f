"""The cluster's line for the model: one named actor around the core's `Scheduler`, and its client.

Model replicas report here (their counters for `/v1/stats`, and their slots, which size the
line); ingress replicas queue jobs and synchronous requests here and take jobs from it. For a
synchronous request the client treats any failure of the actor as "go on without the line", as
the cache client does: the model deployment's own bound still sheds what it cannot take.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import ray
from ray import serve

from .actors import named_actor
from .core.errors import AnimeGANError, Overloaded
from .core.replica_stats import ReplicaStats, Snapshot
from .core.scheduler import JobView, Scheduler
from .core.settings import Settings

log = logging.getLogger("ray.serve")

SCHEDULER_ACTOR_NAME = "animegan-scheduler"
SWEEP_EVERY_S = 1.0
# Model replicas report at least every health check (10 s); one silent for longer is gone.
REPLICA_FRESH_S = 30.0
TAKE_WAIT_S = 1.0  # an ingress replica's take doubles as its heartbeat
# After the line refuses a request (or a job), further ones are refused here for this long
# without asking it: a refusal then costs no actor call, and the line cannot drain meanwhile.
SHED_HOLD_S = 1.0


# Waiting takes and tickets are coroutines: far more than the default 1,000 may be open.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=100_000)  # type: ignore[call-overload]
class SchedulerActor:
    """A thin actor around `Scheduler` and `ReplicaStats`; slots follow the replicas' reports."""

    def __init__(self, max_queued: int, max_per_client: int, ttl_s: float) -> None:
        self.scheduler = Scheduler(
            max_queued=max_queued, max_per_client=max_per_client, ttl_s=ttl_s
        )
        self.replicas = ReplicaStats(fresh_s=REPLICA_FRESH_S)
        self._sweeper: asyncio.Task[None] | None = None

    def report(self, replica: str, snapshot: Snapshot) -> None:
        self.replicas.report(replica, snapshot)
        self._resize()

    def replica_snapshots(self) -> dict[str, Snapshot]:
        return self.replicas.fresh()

    def submit(self, job_id: str, client: str, key: str, payload: Any) -> JobView:
        self._keep_sweeping()
        return self.scheduler.submit(job_id, client, key, payload)

    def record_done(self, job_id: str, client: str, key: str) -> JobView:
        return self.scheduler.record_done(job_id, client, key)

    async def take(self, worker: str, limit: int) -> list[tuple[str, Any]]:
        self._keep_sweeping()
        return await self.scheduler.take(worker, limit, TAKE_WAIT_S)

    def finish(
        self, job_id: str, key: str | None, error: AnimeGANError | None, computed: bool
    ) -> None:
        self.scheduler.finish(job_id, key=key, error=error, computed=computed)

    def cancel(self, job_id: str) -> None:
        self.scheduler.cancel(job_id)

    def view(self, job_id: str) -> JobView:
        return self.scheduler.view(job_id)

    def views(self, job_ids: list[str]) -> dict[str, JobView]:
        return self.scheduler.views(job_ids)

    async def acquire(
        self, ticket: str, worker: str, client: str, key: str, max_wait_s: float
    ) -> float | None:
        self._keep_sweeping()
        return await self.scheduler.acquire(ticket, worker, client, key, max_wait_s=max_wait_s)

    def release(self, ticket: str, key: str | None, computed: bool) -> None:
        self.scheduler.release(ticket, key=key, computed=computed)

    def stats(self) -> dict[str, Any]:
        return self.scheduler.stats()

    def _resize(self) -> None:
        self.scheduler.set_capacity(sum(s["slots"] for s in self.replicas.fresh().values()))

    def _keep_sweeping(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            self._resize()
            self.scheduler.sweep()


def scheduler_actor(settings: Settings) -> Any:
    """The line of the Serve application this replica belongs to (each app has its own)."""
    app = serve.get_replica_context().app_name
    return named_actor(
        SchedulerActor,
        f"{SCHEDULER_ACTOR_NAME}:{app}",
        settings.max_queued_jobs,
        settings.max_jobs_per_client,
        settings.job_ttl_s,
    )


class Hold:
    """For SHED_HOLD_S after the line refused one, refuse here without asking it."""

    def __init__(self) -> None:
        self.refused = 0  # refusals made here, inside a hold
        self._until = 0.0
        self._retry_after_s = 1.0

    def start(self, retry_after_s: float | None) -> None:
        self._until = time.monotonic() + SHED_HOLD_S
        self._retry_after_s = retry_after_s or self._retry_after_s

    def active(self) -> float | None:
        """Seconds to retry after, while the hold lasts (a refusal made here); else None."""
        if time.monotonic() < self._until:
            self.refused += 1
            return self._retry_after_s
        return None


@dataclass
class Turn:
    """A synchronous request's slot; set `computed` once the model ran for it."""

    computed: bool = False


class SchedulerClient:
    """An ingress replica's side of the scheduler actor."""

    def __init__(self, settings: Settings, *, worker: str, call_timeout_s: float) -> None:
        self.settings = settings
        self.actor = scheduler_actor(settings)
        self.worker = worker
        self.call_timeout_s = call_timeout_s
        self.unavailable = 0
        self.busy = Hold()  # after the line refused a synchronous request
        self.full = Hold()  # after the line refused a job: it is full
        self._background: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def turn(self, client: str, key: str) -> AsyncIterator[Turn]:
        """Wait in line for a slot; raises `Overloaded` if the wait would be too long."""
        ticket = secrets.token_hex(16)
        acquire = self.actor.acquire.remote(
            ticket, self.worker, client, key, self.settings.max_wait_s
        )
        in_line = True
        try:
            refused: float | None = await acquire
        except ray.exceptions.RayError as exc:
            self._down(exc)
            refused, in_line = None, False  # go on without the line
        except BaseException:  # the request was cancelled or timed out while in line
            self._in_background(self.actor.release.remote(ticket, None, False))
            raise
        if refused is not None:
            self.busy.start(refused)
            raise Overloaded(
                "too many requests are waiting for the model; retry later",
                retry_after_s=refused,
            )
        turn = Turn()
        try:
            yield turn
        finally:
            if in_line:
                done_key = key if turn.computed else None
                self._in_background(self.actor.release.remote(ticket, done_key, turn.computed))

    async def take(self, limit: int) -> list[tuple[str, Any]]:
        """Jobs whose turn has come, for this replica (waits up to TAKE_WAIT_S for one)."""
        try:
            taken: list[tuple[str, Any]] = await asyncio.wait_for(
                self.actor.take.remote(self.worker, limit), TAKE_WAIT_S + self.call_timeout_s
            )
        except (TimeoutError, ray.exceptions.RayError) as exc:
            self._down(exc)
            await asyncio.sleep(TAKE_WAIT_S)
            return []
        return taken

    def finish(
        self, job_id: str, *, key: str | None, error: AnimeGANError | None, computed: bool
    ) -> None:
        self._in_background(self.actor.finish.remote(job_id, key, error, computed))

    async def submit(self, job_id: str, client: str, key: str, payload: Any) -> JobView:
        try:
            view: JobView = await self._ask(self.actor.submit.remote(job_id, client, key, payload))
        except Overloaded as refused:
            self.full.start(refused.retry_after_s)
            raise
        return view

    async def record_done(self, job_id: str, client: str, key: str) -> JobView:
        view: JobView = await self._ask(self.actor.record_done.remote(job_id, client, key))
        return view

    async def view(self, job_id: str) -> JobView:
        view: JobView = await self._ask(self.actor.view.remote(job_id))
        return view

    async def views(self, job_ids: list[str]) -> dict[str, JobView]:
        views: dict[str, JobView] = await self._ask(self.actor.views.remote(job_ids))
        return views

    async def cancel(self, job_id: str) -> None:
        await self._ask(self.actor.cancel.remote(job_id))

    async def stats(self) -> dict[str, Any] | None:
        try:
            stats: dict[str, Any] = await self._ask(self.actor.stats.remote())
        except Overloaded:
            return None
        return stats

    async def replica_snapshots(self) -> dict[str, Snapshot]:
        try:
            fresh: dict[str, Snapshot] = await self._ask(self.actor.replica_snapshots.remote())
        except Overloaded:
            return {}
        return fresh

    async def _ask(self, ref: ray.ObjectRef) -> Any:
        """A call the caller cannot do without: its refusal as it is, a failure as `Overloaded`."""
        try:
            return await asyncio.wait_for(ref, self.call_timeout_s)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, AnimeGANError):
                raise exc.cause from None
            self._down(exc)
        except (TimeoutError, ray.exceptions.RayError) as exc:
            self._down(exc)
        raise Overloaded("the job queue is unavailable; retry in a few seconds")

    def _down(self, exc: BaseException) -> None:
        self.unavailable += 1
        log.warning("scheduler actor unavailable (%s)", type(exc).__name__)
        if isinstance(exc, ray.exceptions.ActorDiedError):  # restarts exhausted: a new one
            self.actor = scheduler_actor(self.settings)

    def _in_background(self, ref: ray.ObjectRef) -> None:
        async def settle() -> None:
            with contextlib.suppress(TimeoutError, ray.exceptions.RayError):
                await asyncio.wait_for(ref, self.call_timeout_s)

        task = asyncio.create_task(settle())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
