"""The cluster's line for the model: one named actor around the core's `Scheduler`, and its client.

Model replicas report here (their counters for `/v1/stats`, and their slots, which size the
line); ingress replicas queue jobs and synchronous requests here and take jobs from it. The
client is the ingress's `Line` (core/tiers.py) and `JobLine` (core/jobs.py). For a synchronous
request it treats any failure of the actor as "go on without the line", as the cache client
does: the model deployment's own bound still sheds what it cannot take. A call that cannot do
without the actor (a job's submission, its state) is refused with `Overloaded` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve

from .actors import ActorDown, ask, named_actor
from .core.background import Background
from .core.errors import AnimeGANError, Overloaded
from .core.jobs import JobWork
from .core.replica_stats import ReplicaStats, Snapshot
from .core.scheduler import JobView, Scheduler, Taken
from .core.settings import Settings
from .core.shed_hold import ShedHold
from .core.tiers import Turn

log = logging.getLogger("ray.serve")

SCHEDULER_ACTOR_NAME = "animegan-scheduler"
SWEEP_EVERY_S = 1.0
# Model replicas report at least every health check (10 s); one silent for longer is gone.
REPLICA_FRESH_S = 30.0
TAKE_WAIT_S = 1.0  # an ingress replica's take doubles as its heartbeat
BUSY = "too many requests are waiting for the model; retry later"
UNAVAILABLE = "the job queue is unavailable; retry in a few seconds"


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

    def submit(
        self, job_id: str, client: str, key: str, work: JobWork, idempotency_key: str | None
    ) -> JobView:
        self._keep_sweeping()
        return self.scheduler.submit(job_id, client, key, work, idempotency_key=idempotency_key)

    def record_done(
        self, job_id: str, client: str, key: str, idempotency_key: str | None
    ) -> JobView:
        self._keep_sweeping()  # its record expires too
        return self.scheduler.record_done(job_id, client, key, idempotency_key=idempotency_key)

    async def take(self, worker: str, limit: int) -> list[Taken]:
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


class SchedulerClient:
    """An ingress replica's side of the scheduler actor."""

    def __init__(self, settings: Settings, *, worker: str, call_timeout_s: float) -> None:
        self.settings = settings
        self.actor = scheduler_actor(settings)
        self.worker = worker
        self.call_timeout_s = call_timeout_s
        self.unavailable = 0
        self.busy = ShedHold()  # after the line refused a synchronous request
        self.full = ShedHold()  # after the line refused a job: it is full
        self.background = Background()

    # The walk's `Line`

    def refuse_if_busy(self) -> None:
        self.busy.check()

    @contextlib.asynccontextmanager
    async def turn(self, client: str, key: str) -> AsyncIterator[Turn]:
        """Wait in line for a slot; raises `Overloaded` if the wait would be too long."""
        ticket = secrets.token_hex(16)
        acquire = self.actor.acquire.remote(
            ticket, self.worker, client, key, self.settings.max_wait_s
        )
        in_line = True
        try:
            refused: float | None = await ask(acquire, None)
        except ActorDown as down:
            self._down(down)
            refused, in_line = None, False  # go on without the line
        except BaseException:  # the request was cancelled or timed out while in line
            self._settle(self.actor.release.remote(ticket, None, False))
            raise
        if refused is not None:
            refusal = Overloaded(BUSY, retry_after_s=refused)
            self.busy.start(refusal)
            raise refusal
        turn = Turn()
        try:
            yield turn
        finally:
            if in_line:
                done_key = key if turn.computed else None
                self._settle(self.actor.release.remote(ticket, done_key, turn.computed))

    # The jobs' `JobLine`

    def refuse_if_full(self) -> None:
        self.full.check()

    async def submit(
        self, job_id: str, client: str, key: str, work: JobWork, idempotency_key: str | None
    ) -> JobView:
        ref = self.actor.submit.remote(job_id, client, key, work, idempotency_key)
        try:
            view: JobView = await ask(ref, self.call_timeout_s)
        except Overloaded as refusal:  # the line's own: it is full
            self.full.start(refusal)
            raise
        except ActorDown as down:
            raise self._unavailable(down) from None
        return view

    async def record_done(
        self, job_id: str, client: str, key: str, idempotency_key: str | None
    ) -> JobView:
        ref = self.actor.record_done.remote(job_id, client, key, idempotency_key)
        view: JobView = await self._needed(ref)
        return view

    async def take(self, limit: int) -> list[Taken]:
        """Jobs whose turn has come, for this replica (waits up to TAKE_WAIT_S for one)."""
        ref = self.actor.take.remote(self.worker, limit)
        taken: list[Taken] | None = await self._or_none(ref, TAKE_WAIT_S + self.call_timeout_s)
        if taken is None:
            await asyncio.sleep(TAKE_WAIT_S)  # down: ask again in a moment
            return []
        return taken

    def finish(
        self, job_id: str, *, key: str | None, error: AnimeGANError | None, computed: bool
    ) -> None:
        self._settle(self.actor.finish.remote(job_id, key, error, computed))

    # Jobs' states, and the line's counters

    async def view(self, job_id: str) -> JobView:
        view: JobView = await self._needed(self.actor.view.remote(job_id))
        return view

    async def views(self, job_ids: list[str]) -> dict[str, JobView]:
        views: dict[str, JobView] = await self._needed(self.actor.views.remote(job_ids))
        return views

    async def cancel(self, job_id: str) -> None:
        await self._needed(self.actor.cancel.remote(job_id))

    async def stats(self) -> dict[str, Any] | None:
        """The line's counters; None while the actor is down."""
        stats: dict[str, Any] | None = await self._or_none(self.actor.stats.remote())
        return stats

    async def replica_snapshots(self) -> dict[str, Snapshot]:
        """What the model replicas last reported; {} while the actor is down."""
        fresh: dict[str, Snapshot] | None = await self._or_none(
            self.actor.replica_snapshots.remote()
        )
        return fresh or {}

    @property
    def shed_here(self) -> int:
        """Refusals this replica made inside a hold, without asking the line."""
        return self.busy.refused + self.full.refused

    async def _needed(self, ref: ray.ObjectRef) -> Any:
        """A call the caller cannot do without: its refusal as it is, the actor down as
        `Overloaded`."""
        try:
            return await ask(ref, self.call_timeout_s)
        except ActorDown as down:
            raise self._unavailable(down) from None

    async def _or_none(self, ref: ray.ObjectRef, timeout_s: float | None = None) -> Any:
        """A call the caller can do without: None while the actor is down."""
        try:
            return await ask(ref, timeout_s or self.call_timeout_s)
        except ActorDown as down:
            self._down(down)
            return None

    def _unavailable(self, down: ActorDown) -> Overloaded:
        self._down(down)
        return Overloaded(UNAVAILABLE)

    def _down(self, down: ActorDown) -> None:
        self.unavailable += 1
        log.warning("scheduler actor unavailable (%s)", down)
        if down.died:  # restarts exhausted: a new one
            self.actor = scheduler_actor(self.settings)

    def _settle(self, ref: ray.ObjectRef) -> None:
        """A call whose answer nobody waits for (it frees a slot, ends a job)."""

        async def settle() -> None:
            with contextlib.suppress(ActorDown, AnimeGANError):
                await ask(ref, self.call_timeout_s)

        self.background.spawn(settle())
