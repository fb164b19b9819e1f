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
import math
import secrets
from collections.abc import AsyncIterator
from typing import Any

import ray
from ray import serve

from . import telemetry
from .actors import ActorDown, ask, named_actor
from .core.background import Background
from .core.errors import AnimeGANError, Overloaded
from .core.jobs import job_json
from .core.journal import Journal
from .core.replica_stats import ReplicaStats, Snapshot
from .core.scheduler import TAKE_EVERY_S, Handout, JobView, Scheduler, Submission
from .core.settings import Settings
from .core.shed_hold import ShedHold
from .core.tiers import Turn
from .core.webhooks import Webhooks
from .records import job_records

log = logging.getLogger("ray.serve")

SCHEDULER_ACTOR_NAME = "animegan-scheduler"
SWEEP_EVERY_S = 1.0
# Model replicas report at least every health check (10 s); one silent for longer is gone.
REPLICA_FRESH_S = 30.0
FINISH_RETRIES_S = (0.5, 1, 2, 4, 8, 15, 30)  # a minute: a restart of the line takes seconds
BUSY = "too many requests are waiting for the model; retry later"
UNAVAILABLE = "the job queue is unavailable; retry in a few seconds"


# Waiting takes and tickets are coroutines: far more than the default 1,000 may be open.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=100_000)  # type: ignore[call-overload]
class SchedulerActor:
    """A thin actor around `Scheduler` and `ReplicaStats`; slots follow the replicas' reports,
    jobs' records go to the journal, and ended jobs' callbacks to the webhooks."""

    def __init__(self, settings: Settings, app: str) -> None:
        self.journal = Journal(job_records(settings, app))
        self.metrics = {m.name: m.make() for m in telemetry.LINE_METRICS}
        secret = settings.webhook_secret
        self.webhooks = Webhooks(
            secret=None if secret is None else secret.get_secret_value(),
            allowed_hosts=settings.webhook_allowed_hosts,
            timeout_s=settings.webhook_timeout_s,
            retry_for_s=settings.webhook_retry_for_s,
            delivered=self._delivered,
            counted=self._count_webhook,
        )
        self.scheduler = Scheduler(
            max_queued=settings.max_queued_jobs,
            max_per_client=settings.max_jobs_per_client,
            max_queued_bytes=settings.max_queued_bytes,
            max_client_bytes=settings.max_client_queued_bytes,
            ttl_s=settings.job_ttl_s,
            journal=self.journal,
            ended=self._ended,
        )
        self.replicas = ReplicaStats(fresh_s=REPLICA_FRESH_S)
        try:
            self._records: list[dict[str, Any]] | None = self.journal.records.load()
        except Exception as exc:  # the store is down: a line without its past beats none
            log.warning("job records could not be read (%s: %s)", type(exc).__name__, exc)
            self._records = []
        self._sweeper: asyncio.Task[None] | None = None

    def report(self, replica: str, snapshot: Snapshot) -> None:
        self._ready()
        self.replicas.report(replica, snapshot)
        self._resize()

    def replica_snapshots(self) -> dict[str, Snapshot]:
        return self.replicas.fresh()

    async def submit(self, job: Submission) -> JobView:
        self._ready()
        view = self.scheduler.submit(job)
        await self.journal.flush()  # answered once on record
        return view

    async def record_done(self, job: Submission) -> JobView:
        self._ready()
        view = self.scheduler.record_done(job)
        await self.journal.flush()
        return view

    async def take(self, worker: str, limit: int, running: list[str], held: list[str]) -> Handout:
        self._ready()
        return await self.scheduler.take(worker, limit, TAKE_EVERY_S, running, held)

    def finish(
        self, job_id: str, key: str | None, error: AnimeGANError | None, computed: bool
    ) -> None:
        self._ready()
        self.scheduler.finish(job_id, key=key, error=error, computed=computed)

    def detach(self, job_id: str) -> None:
        self.scheduler.detach(job_id)

    def progress(
        self, job_id: str, done: int, total: int, crop: str | None, faces: str | None
    ) -> None:
        self.scheduler.progress(job_id, done, total, crop, faces)

    def cancel(self, job_id: str) -> None:
        self._ready()
        self.scheduler.cancel(job_id)

    def view(self, job_id: str) -> JobView:
        self._ready()
        return self.scheduler.view(job_id)

    def views(self, job_ids: list[str]) -> dict[str, JobView]:
        self._ready()
        return self.scheduler.views(job_ids)

    async def acquire(
        self, ticket: str, worker: str, client: str, key: str, max_wait_s: float, work: float
    ) -> float | None:
        self._ready()
        return await self.scheduler.acquire(
            ticket, worker, client, key, max_wait_s=max_wait_s, work=work
        )

    def release(self, ticket: str, key: str | None, computed: bool) -> None:
        self.scheduler.release(ticket, key=key, computed=computed)

    def stats(self) -> dict[str, Any]:
        self._ready()
        return {
            **self.scheduler.stats(),
            "record_failures": self.journal.failures,
            "webhooks": dict(self.webhooks.outcomes),
        }

    def _ready(self) -> None:
        """On the first call (in the event loop): pick up the records, start sweeping."""
        if self._records is not None:
            records, self._records = self._records, None
            self.scheduler.restore(records)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep())

    def _resize(self) -> None:
        self.scheduler.set_capacity(sum(s["slots"] for s in self.replicas.fresh().values()))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            self._resize()
            self.scheduler.sweep()

    def _ended(self, job: Submission, view: JobView) -> None:
        assert job.callback_url is not None
        self.webhooks.send(job.id, job.callback_url, job_json(view, job.root))

    def _delivered(self, job_id: str) -> None:
        self.scheduler.delivered(job_id)

    def _count_webhook(self, outcome: str) -> None:
        self.metrics[telemetry.WEBHOOKS.name].inc(tags={"outcome": outcome})


def scheduler_actor(settings: Settings) -> Any:
    """The line of the Serve application this replica belongs to (each app has its own)."""
    app = serve.get_replica_context().app_name
    return named_actor(SchedulerActor, f"{SCHEDULER_ACTOR_NAME}:{app}", settings, app)


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
    async def turn(
        self, client: str, key: str, work: float, *, patient: bool = False
    ) -> AsyncIterator[Turn]:
        """Wait in line for a slot; raises `Overloaded` if the wait would be too long (for a
        `patient` turn, a video's frame, only when the line is full)."""
        ticket = secrets.token_hex(16)
        max_wait_s = math.inf if patient else self.settings.max_wait_s
        acquire = self.actor.acquire.remote(ticket, self.worker, client, key, max_wait_s, work)
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

    async def submit(self, job: Submission) -> JobView:
        ref = self.actor.submit.remote(job)
        try:
            view: JobView = await ask(ref, self.call_timeout_s)
        except Overloaded as refusal:  # the line's own: it is full
            self.full.start(refusal)
            raise
        except ActorDown as down:
            raise self._unavailable(down) from None
        return view

    async def record_done(self, job: Submission) -> JobView:
        view: JobView = await self._needed(self.actor.record_done.remote(job))
        return view

    async def take(self, limit: int, running: list[str], held: list[str]) -> Handout:
        """Jobs whose turn has come, for this replica (waits up to TAKE_EVERY_S for one)."""
        ref = self.actor.take.remote(self.worker, limit, running, held)
        handout: Handout | None = await self._or_none(ref, TAKE_EVERY_S + self.call_timeout_s)
        if handout is None:
            await asyncio.sleep(TAKE_EVERY_S)  # down: ask again in a moment
            return Handout([], [])
        return handout

    def finish(
        self, job_id: str, *, key: str | None, error: AnimeGANError | None, computed: bool
    ) -> None:
        """Report a job's end, again until the line has it (it may be restarting). The first
        report is sent now: before this replica's next take, which no longer names the job."""
        first = self.actor.finish.remote(job_id, key, error, computed)

        async def report(ref: ray.ObjectRef) -> None:
            for wait_s in FINISH_RETRIES_S:
                try:
                    await ask(ref, self.call_timeout_s)
                    return
                except ActorDown as down:
                    self._down(down)
                    await asyncio.sleep(wait_s)
                    ref = self.actor.finish.remote(job_id, key, error, computed)

        self.background.spawn(report(first))

    def detach(self, job_id: str) -> None:
        """Give a running video's slot back: its frames take turns of their own."""
        self._settle(self.actor.detach.remote(job_id))

    def progress(
        self,
        job_id: str,
        done: int,
        total: int,
        crop: str | None = None,
        faces: str | None = None,
    ) -> None:
        """Tell the line how far a running video is, and its cut (or a picture's faces found);
        nobody waits for the answer."""
        self._settle(self.actor.progress.remote(job_id, done, total, crop, faces))

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
