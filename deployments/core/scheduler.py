"""The cluster's one line for the model: jobs and synchronous requests share its slots fairly.

Every miss waits here for a *slot*: the model replicas report how many requests each should
hold at once (about what keeps it busy), and no more than their sum run at a time, so the order
of the line is the order in which work runs. Entries wait in a `FairQueue` (deficit round-robin
on each entry's work, in megapixels):

- a *job* (`POST /v1/jobs`) is a small record: its upload stays with the ingress replica that
  accepted it (its *holder*; in Redis too where `stored`). When its turn comes it is handed to
  its holder's `take` (or, stored, to any), which runs it and reports it `finish`ed; its state is
  kept `ttl_s` after that, for polling. Every change of a job is told to the `journal`, which
  keeps it where it outlives this process; `restore` picks the line up from those records;
- a *ticket* is a synchronous request's place in line: `acquire` returns when its turn comes
  (or refuses at once when the wait would exceed the caller's budget) and the caller `release`s
  the slot when done. Tickets live and die with their request: they are never journaled.

A result computed for a key finishes every queued job with the same key at once. Ingress
replicas are heard from at least every `take`, which also says which jobs they are running: a
job handed out but not running there goes back to its place (its answer was lost). One silent
for `lost_after_s` is gone: its jobs go back in line if their uploads are stored, else fail
with `job_lost`. Plain asyncio: the scheduler actor wraps one of these.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, NamedTuple, Protocol

from .errors import (
    AnimeGANError,
    Cancelled,
    IdempotencyConflict,
    JobLost,
    JobNotQueued,
    Overloaded,
    TooManyJobs,
    UnknownJob,
    error_from_code,
)
from .fair_queue import QUANTUM, FairQueue
from .pace import Pace

Status = Literal["queued", "running", "done", "failed"]

RETRY_AFTER_UNKNOWN_S = 2.0  # before the first completions measure the pace
RETRY_AFTER_MAX_S = 3600.0
TAKE_EVERY_S = 1.0  # an ingress replica asks again at least this often (its take's wait)
LOST = "the ingress replica holding this job stopped before it ran; submit it again"


@dataclass(frozen=True)
class JobView:
    """What `GET /v1/jobs/{id}` shows of a job."""

    id: str
    status: Status
    position: int | None  # entries to be served before it, while queued
    eta_s: float | None  # seconds until its result, while queued or running and the pace known
    result: str | None  # the result's cache key, once done
    error: AnimeGANError | None  # once failed
    kind: str = "image"  # or "video": a clip, whose frames take turns of their own
    progress: tuple[int, int] | None = None  # a video's (frames done, frames in all)
    crop: str | None = None  # a video's one cut for the whole clip (`X-Crop`), once found
    faces: str | None = None  # a picture's faces drawn in a face style (`X-Faces`), once found

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


@dataclass(frozen=True)
class Submission:
    """A job as an ingress replica hands it to the line: everything but the upload."""

    id: str
    client: str
    key: str
    work: float = QUANTUM  # megapixels of inference (a video's: of one frame)
    nbytes: int = 0  # the upload's size
    frames: int = 0  # a video's, as its header counts them (0 for a picture)
    holder: str | None = None  # the ingress replica keeping the upload
    stored: bool = False  # the upload is in Redis too: any ingress replica can run it
    idempotency_key: str | None = None
    callback_url: str | None = None  # told of the job's end (webhooks)
    root: str = ""  # the application's route prefix, for the result's URL


class Taken(NamedTuple):
    """A job handed to an ingress replica to run: its id, its result's key, whether its
    upload is stored (in Redis) besides with its holder, and its client (a video's frames
    take turns as that client's)."""

    id: str
    key: str
    stored: bool
    client: str = ""


class Handout(NamedTuple):
    """What a `take` returns: jobs to run, and which of the uploads it said it holds to let
    go of (their jobs ended, went to another replica, or are unknown here)."""

    jobs: list[Taken]
    drop: list[str]


class Journal(Protocol):
    """Where the jobs' records outlive the line (the actor writes them behind)."""

    def save(self, record: dict[str, Any]) -> None: ...

    def forget(self, job_id: str) -> None: ...


class Ended(Protocol):
    """Told when a job with a `callback_url` ends (the webhooks)."""

    def __call__(self, job: Submission, view: JobView) -> None: ...


@dataclass
class _Entry:
    job: Submission
    order: float  # when it was submitted: its place within its client's lane
    grant: asyncio.Future[bool] | None = None  # a ticket's turn: True, or False if withdrawn
    worker: str | None = None  # the ingress replica running it
    status: Status = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    error: AnimeGANError | None = None
    notified: bool = False  # its callback was delivered
    progress: tuple[int, int] | None = None  # a running video's, as its runner reports it
    crop: str | None = None  # a video's cut, as its runner found it
    faces: str | None = None  # a picture's faces to draw, as its runner found them
    detached: bool = False  # a running video that gave its slot back (its frames take turns)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def is_ticket(self) -> bool:
        return self.grant is not None

    def record(self) -> dict[str, Any]:
        """The job as JSON-ready values, for the journal."""
        error = None if self.error is None else [self.error.code, self.error.message]
        return {
            "job": asdict(self.job),
            "order": self.order,
            "worker": self.worker,
            "status": self.status,
            "finished_at": self.finished_at,
            "error": error,
            "notified": self.notified,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> _Entry:
        error = record["error"]
        return cls(
            Submission(**record["job"]),
            float(record["order"]),
            worker=record["worker"],
            status=record["status"],
            finished_at=record["finished_at"],
            error=None if error is None else error_from_code(*error),
            notified=record["notified"],
        )


@dataclass
class _Taker:
    """An ingress replica waiting in `take` for up to `limit` jobs."""

    worker: str
    limit: int
    jobs: list[Taken] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class _Quiet:
    def save(self, record: dict[str, Any]) -> None:
        pass

    def forget(self, job_id: str) -> None:
        pass


class Scheduler:
    """The fair line, its slots, the jobs' states and the ingress replicas serving them."""

    def __init__(
        self,
        *,
        max_queued: int,
        max_per_client: int,
        ttl_s: float,
        max_queued_bytes: int = 1 << 62,
        max_client_bytes: int = 1 << 62,
        lost_after_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        journal: Journal | None = None,
        ended: Ended | None = None,
    ) -> None:
        self.max_queued = max_queued
        self.max_per_client = max_per_client
        self.max_queued_bytes = max_queued_bytes
        self.max_client_bytes = max_client_bytes
        self.ttl_s = ttl_s
        self.lost_after_s = lost_after_s
        self.clock = clock  # wall time: records outlive this process
        self.journal = journal or _Quiet()
        self.ended = ended
        self.capacity = 0  # slots: requests the model replicas take at once, all together
        self.running = 0
        self.pace = Pace(clock)
        self.queue = FairQueue()
        self.queued_bytes = 0
        self._client_bytes: defaultdict[str, int] = defaultdict(int)
        self._waiting_for: defaultdict[str, set[str]] = defaultdict(set)  # key -> queued jobs
        self._entries: dict[str, _Entry] = {}  # queued and running entries, finished jobs
        self._takers: list[_Taker] = []
        self._workers: dict[str, float] = {}  # ingress replica -> last heard from
        self._runs: dict[str, _Entry] = {}  # running jobs
        self._idempotent: dict[tuple[str, str], str] = {}  # (client, Idempotency-Key) -> job
        self._last_order = 0.0
        self.counters = dict.fromkeys(
            (
                "jobs",
                "tickets",
                "shed",
                "refused",
                "lost",
                "replayed",
                "requeued",
                "restored",
                "unreadable",
            ),
            0,
        )

    # Slots

    def set_capacity(self, slots: int) -> None:
        self.capacity = slots
        self._dispatch()

    # Jobs

    def submit(self, job: Submission) -> JobView:
        """Queue a job; raises `Overloaded` when the line is full (by count or bytes),
        `TooManyJobs` when its client has its share queued.

        With an `idempotency_key` the client used before for a job still known, that job is
        answered instead (if it was for the same `key`; else `IdempotencyConflict`)."""
        replayed = self._replayed(job)
        if replayed is not None:
            return replayed
        self._admit(job)
        if job.holder is not None:
            self._workers[job.holder] = self.clock()
        entry = _Entry(job, self._next_order())
        self._add(entry)
        self._remember(entry)
        self._dispatch()
        return self.view(job.id)

    def record_done(self, job: Submission) -> JobView:
        """A job whose result is already stored: done from the start (or, as for `submit`,
        the job its `idempotency_key` already names)."""
        replayed = self._replayed(job)
        if replayed is not None:
            return replayed
        now = self.clock()
        entry = _Entry(job, now)
        self._entries[job.id] = entry
        self._remember(entry)
        self._end(entry, error=None)
        return self.view(job.id)

    async def take(
        self,
        worker: str,
        limit: int,
        wait_s: float,
        running: Iterable[str] = (),
        held: Iterable[str] = (),
    ) -> Handout:
        """Up to `limit` jobs for `worker` to run, waiting up to `wait_s` for one. `running`:
        the jobs it is running now (a job handed to it before and not among them never
        arrived, and goes back to its place); `held`: uploads it keeps, to check."""
        self._workers[worker] = self.clock()
        self._reconcile(worker, set(running))
        drop = [i for i in held if not self._holds(worker, i)]
        if limit <= 0:
            return Handout([], drop)
        taker = _Taker(worker, limit)
        self._takers.append(taker)
        self._dispatch()
        try:
            await asyncio.wait_for(asyncio.shield(taker.done), wait_s)
        except TimeoutError:
            pass
        finally:
            if taker in self._takers:
                self._takers.remove(taker)
        return Handout(taker.jobs, drop)

    def finish(
        self,
        job_id: str,
        *,
        key: str | None = None,
        error: AnimeGANError | None = None,
        computed: bool = False,
    ) -> None:
        """A job's end as its runner reports it: its result `key` (`computed` if the model ran
        for it), or the `error` that refused it."""
        entry = self._entries.get(job_id)
        if entry is None or entry.is_ticket or entry.finished_at is not None:
            return  # forgotten, or ended already (a runner's report may come twice)
        if entry.status == "running":
            self._free(entry, computed=computed)
        else:  # back in line after a restart, its runner still at it: it ends here
            self._unqueue(entry)
        self._end(entry, error=error)
        if key is not None and error is None:
            self._finish_same(key)
        self._dispatch()

    def cancel(self, job_id: str) -> None:
        """Cancel a queued job; it ends `failed` with the code `cancelled`."""
        entry = self._job(job_id)
        if entry.status != "queued":
            raise JobNotQueued(
                f"job {job_id} is {entry.status}; only a queued job can be cancelled"
            )
        self._unqueue(entry)
        self._end(entry, error=Cancelled("the job was cancelled before it ran"))

    def delivered(self, job_id: str) -> None:
        """The job's callback was delivered (or given up on): not to be sent again."""
        entry = self._entries.get(job_id)
        if entry is not None:
            entry.notified = True
            self.journal.save(entry.record())

    def detach(self, job_id: str) -> None:
        """A running video gives its slot back: its frames wait in line as its client's
        tickets, so that it holds no slot of its own however long it runs."""
        entry = self._entries.get(job_id)
        if entry is not None and entry.status == "running" and not entry.detached:
            entry.detached = True
            self.running -= 1
            self._dispatch()

    def progress(
        self,
        job_id: str,
        done: int,
        total: int,
        crop: str | None = None,
        faces: str | None = None,
    ) -> None:
        """A running video's frames done so far and its cut (a picture's faces found), as its
        runner reports them."""
        entry = self._entries.get(job_id)
        if entry is not None and entry.status == "running" and not entry.is_ticket:
            entry.progress = (done, total)
            entry.crop = crop or entry.crop
            entry.faces = faces or entry.faces

    def view(self, job_id: str) -> JobView:
        entry = self._job(job_id)
        ahead = self.queue.ahead(job_id) if entry.status == "queued" else None
        position = None if ahead is None else ahead[0]
        result = entry.job.key if entry.status == "done" else None
        eta = self._eta(entry, None if ahead is None else ahead[1])
        if not entry.job.frames:
            return JobView(
                job_id, entry.status, position, eta, result, entry.error, faces=entry.faces
            )
        progress = entry.progress or (0, entry.job.frames)
        if entry.status == "done":
            progress = (progress[1], progress[1])
        return JobView(
            job_id, entry.status, position, eta, result, entry.error, "video", progress, entry.crop
        )

    def views(self, job_ids: Iterable[str]) -> dict[str, JobView]:
        """The views of those ids still known (watchers ask for many at once)."""
        return {i: self.view(i) for i in job_ids if self._is_job(i)}

    def restore(self, records: Iterable[dict[str, Any]]) -> None:
        """Pick up the jobs a journal kept (after this process or the application restarted):
        queued ones at their places, running ones with their runners, finished ones until
        their TTL. Replicas they name have `lost_after_s` to be heard from."""
        for entry in sorted(self._readable(records), key=lambda e: e.order):  # stores keep none
            if entry.id not in self._entries:
                self._restore(entry)
        self._dispatch()

    # Tickets

    async def acquire(
        self,
        ticket: str,
        worker: str,
        client: str,
        key: str,
        *,
        max_wait_s: float,
        work: float = QUANTUM,
    ) -> float | None:
        """Wait for a slot; None once granted, or the seconds to retry after when refused.

        Refused at once when the line is full, or when its measured pace says the wait would
        exceed `max_wait_s` (before the pace is known, every ticket waits its turn).
        """
        self._workers[worker] = self.clock()
        if len(self.queue) >= self.max_queued:
            self.counters["shed"] += 1
            return self._retry_after(self.queue.work)
        if self.queue or self.running >= self.capacity:
            wait_s = self._wait_s(self.queue.work_ahead_of_next(client, work) + work)
            if wait_s is not None and wait_s > max_wait_s:
                self.counters["shed"] += 1
                return max(1.0, math.ceil(wait_s - max_wait_s))
        grant: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        job = Submission(ticket, client, key, work=work)
        entry = _Entry(job, self._next_order(), grant=grant, worker=worker)
        self._entries[ticket] = entry
        self._enqueue(entry)
        self.counters["tickets"] += 1
        self._dispatch()
        granted = await asyncio.shield(grant)
        return None if granted else RETRY_AFTER_UNKNOWN_S

    def release(self, ticket: str, *, key: str | None = None, computed: bool = False) -> None:
        """A ticket's holder is done (with the result for `key`, `computed` if the model ran
        for it), or gives up its place."""
        entry = self._entries.pop(ticket, None)
        if entry is None:
            return
        if entry.status == "queued":
            self.queue.remove(ticket)
            if entry.grant is not None and not entry.grant.done():
                entry.grant.set_result(False)
            return
        self._free(entry, computed=computed)
        if key is not None:
            self._finish_same(key)
        self._dispatch()

    # Housekeeping

    def sweep(self) -> None:
        """Forget finished jobs past their TTL; what lost ingress replicas held or ran goes
        back in line where its upload is stored, else fails."""
        now = self.clock()
        lost = {w for w, seen in self._workers.items() if now - seen > self.lost_after_s}
        for worker in lost:
            del self._workers[worker]
        for entry in list(self._entries.values()):
            if entry.finished_at is not None:
                if now - entry.finished_at > self.ttl_s:
                    self._forget(entry)
            elif entry.is_ticket:
                if entry.worker in lost:
                    self.release(entry.id)
            elif entry.status == "running" and entry.worker in lost:
                self._lose(entry)
            elif entry.status == "queued" and entry.job.holder in lost:
                self._orphan(entry)
        self._dispatch()

    def stats(self) -> dict[str, Any]:
        rate = self.pace.work_per_s()
        return {
            "slots": self.capacity,
            "running": self.running,
            "queued": len(self.queue),
            "queued_bytes": self.queued_bytes,
            "megapixels_per_s": None if rate is None else round(rate, 3),
            "ingress_replicas": len(self._workers),
            **self.counters,
        }

    # Internals: restoring

    def _readable(self, records: Iterable[dict[str, Any]]) -> list[_Entry]:
        readable = []
        for record in records:
            try:
                readable.append(_Entry.from_record(record))
            except (KeyError, TypeError, ValueError):  # a shape this version does not read
                self.counters["unreadable"] += 1
        return readable

    def _restore(self, entry: _Entry) -> None:
        self.counters["restored"] += 1
        self._entries[entry.id] = entry
        self._last_order = max(self._last_order, entry.order)
        if entry.job.idempotency_key is not None:
            self._idempotent[(entry.job.client, entry.job.idempotency_key)] = entry.id
        for worker in (entry.worker, entry.job.holder):
            if worker is not None:
                self._workers.setdefault(worker, self.clock())
        if entry.status == "queued":
            self._enqueue(entry)
        elif entry.status == "running":
            self._start(entry, worker=entry.worker)
        elif not entry.notified:
            self._tell(entry)

    # Internals: admission

    def _admit(self, job: Submission) -> None:
        """Refuse a job the line has no room for, or whose client has its share queued."""
        if len(self.queue) >= self.max_queued or (
            self.queued_bytes + job.nbytes > self.max_queued_bytes
        ):
            self.counters["refused"] += 1
            raise Overloaded(
                f"the queue is full ({len(self.queue):,} waiting, "
                f"{self.queued_bytes / 2**20:,.0f} MiB); retry later",
                retry_after_s=self._retry_after(self.queue.work),
            )
        waiting = self.queue.queued_by(job.client)[0]
        held = self._client_bytes.get(job.client, 0)
        if waiting >= self.max_per_client or held + job.nbytes > self.max_client_bytes:
            self.counters["refused"] += 1
            raise TooManyJobs(
                f"you have {waiting} jobs ({held / 2**20:,.0f} MiB) waiting, the most one "
                "client may; retry when one has finished",
                retry_after_s=self._retry_after(self.queue.work_ahead_of_next(job.client, 0)),
            )

    def _next_order(self) -> float:
        """The submission time, later than any before it (records keep it across restarts)."""
        self._last_order = max(self.clock(), math.nextafter(self._last_order, math.inf))
        return self._last_order

    def _replayed(self, job: Submission) -> JobView | None:
        """The view of the job its client submitted with its `idempotency_key`, if any."""
        known = (
            None
            if job.idempotency_key is None
            else self._idempotent.get((job.client, job.idempotency_key))
        )
        if known is None:
            return None
        if self._entries[known].job.key != job.key:
            raise IdempotencyConflict(
                "this Idempotency-Key was sent before with another picture or other options; "
                "use a new key for new work"
            )
        self.counters["replayed"] += 1
        return self.view(known)

    def _remember(self, entry: _Entry) -> None:
        self.counters["jobs"] += 1
        if entry.job.idempotency_key is not None:
            self._idempotent[(entry.job.client, entry.job.idempotency_key)] = entry.id

    def _add(self, entry: _Entry) -> None:
        self._entries[entry.id] = entry
        self._enqueue(entry)
        self.journal.save(entry.record())

    # Internals: the queue and the slots

    def _enqueue(self, entry: _Entry) -> None:
        entry.status = "queued"
        self.queue.push(entry.id, entry.job.client, entry.job.work, (entry.order, entry.id))
        self._queued(entry, +1)

    def _unqueue(self, entry: _Entry) -> None:
        self.queue.remove(entry.id)
        self._queued(entry, -1)

    def _queued(self, entry: _Entry, sign: int) -> None:
        """`entry` joins (+1) or leaves (-1) the queue: its bytes, and a job by its key."""
        if not entry.is_ticket:
            waiting = self._waiting_for[entry.job.key]
            if sign > 0:
                waiting.add(entry.id)
            else:
                waiting.discard(entry.id)
                if not waiting:
                    del self._waiting_for[entry.job.key]
        self.queued_bytes += sign * entry.job.nbytes
        self._client_bytes[entry.job.client] += sign * entry.job.nbytes
        if not self._client_bytes[entry.job.client]:
            del self._client_bytes[entry.job.client]

    def _dispatch(self) -> None:
        """Start entries in fair order while slots are free (a job needs a taker that can run
        it: its holder's, or any for a stored upload)."""
        while self.running < self.capacity and (head := self.queue.peek()) is not None:
            entry = self._entries[head]
            taker = None if entry.is_ticket else self._taker_for(entry)
            if not entry.is_ticket and taker is None:
                if self._coming_back(entry.job.holder):
                    break  # its holder is between two takes: the line keeps its order
                found = self._first_startable()
                if found is None:
                    break
                entry, taker = found
            if entry.id == head:
                self.queue.pop()
                self._queued(entry, -1)
            else:
                self._unqueue(entry)
            self._hand(entry, taker)
        for taker in self._takers:
            if taker.jobs and not taker.done.done():
                taker.done.set_result(None)

    def _hand(self, entry: _Entry, taker: _Taker | None) -> None:
        if taker is None:  # a ticket
            self._start(entry, worker=entry.worker)
            assert entry.grant is not None
            entry.grant.set_result(True)
            return
        self._start(entry, worker=taker.worker)
        taker.jobs.append(Taken(entry.id, entry.job.key, entry.job.stored, entry.job.client))
        self.journal.save(entry.record())

    def _taker_for(self, entry: _Entry) -> _Taker | None:
        holder = entry.job.holder
        free = [t for t in self._takers if len(t.jobs) < t.limit]
        own = next((t for t in free if t.worker == holder), None)
        if own is not None or not (entry.job.stored or holder is None):
            return own
        return free[0] if free else None

    def _coming_back(self, holder: str | None) -> bool:
        """Whether `holder` took jobs lately and will ask again in a moment."""
        seen = None if holder is None else self._workers.get(holder)
        return seen is not None and self.clock() - seen < 2 * TAKE_EVERY_S

    def _first_startable(self) -> tuple[_Entry, _Taker | None] | None:
        """The first entry in fair order that can start now (rare: the head's holder is
        silent)."""
        for entry_id in self.queue.order():
            entry = self._entries[entry_id]
            if entry.is_ticket:
                return entry, None
            taker = self._taker_for(entry)
            if taker is not None:
                return entry, taker
        return None

    def _start(self, entry: _Entry, *, worker: str | None) -> None:
        entry.status = "running"
        entry.worker = worker
        entry.started_at = self.clock()
        self.running += 1
        self.pace.started()
        if not entry.is_ticket:
            self._runs[entry.id] = entry

    def _free(self, entry: _Entry, *, computed: bool) -> None:
        self._runs.pop(entry.id, None)
        if entry.detached:  # its slot was given back already
            entry.detached = False
            return
        self.running -= 1
        started = entry.started_at if entry.started_at is not None else self.clock()
        self.pace.stopped(self.clock() - started if computed else None, entry.job.work)

    def _reconcile(self, worker: str, running: set[str]) -> None:
        """Agree with `worker` on what it runs: handed-out jobs it does not have go back to
        their places; jobs it runs that the line thought queued (records from before a
        restart) are running."""
        for run in list(self._runs.values()):
            if run.worker == worker and run.id not in running:
                self._requeue(run)
        for job_id in running:
            entry = self._entries.get(job_id)
            if entry is not None and entry.status == "queued" and not entry.is_ticket:
                self._unqueue(entry)
                self._start(entry, worker=worker)
                self.journal.save(entry.record())

    def _holds(self, worker: str, job_id: str) -> bool:
        """Whether `worker` should keep the upload of `job_id`: queued, held by it."""
        entry = self._entries.get(job_id)
        return entry is not None and entry.status == "queued" and entry.job.holder == worker

    def _requeue(self, entry: _Entry) -> None:
        """A running job back at its place in line (its runner never had it, or stopped)."""
        self.counters["requeued"] += 1
        self._free(entry, computed=False)
        entry.worker = None
        self._enqueue(entry)
        self.journal.save(entry.record())

    # Internals: ends

    def _end(self, entry: _Entry, *, error: AnimeGANError | None) -> None:
        entry.status = "failed" if error is not None else "done"
        entry.error = error
        entry.finished_at = self.clock()
        self.journal.save(entry.record())
        self._tell(entry)

    def _tell(self, entry: _Entry) -> None:
        if entry.job.callback_url is not None and self.ended is not None:
            self.ended(entry.job, self.view(entry.id))

    def _finish_same(self, key: str) -> None:
        """A result for `key` exists now: queued jobs that want it are done."""
        for job_id in list(self._waiting_for.get(key, ())):
            entry = self._entries[job_id]
            self._unqueue(entry)
            self._end(entry, error=None)

    def _lose(self, entry: _Entry) -> None:
        """A running job whose runner stopped."""
        if entry.job.stored:
            self._requeue(entry)
            return
        self.counters["lost"] += 1
        self._free(entry, computed=False)
        self._end(entry, error=JobLost(LOST))

    def _orphan(self, entry: _Entry) -> None:
        """A queued job whose holder stopped: any replica runs it from Redis, or it fails."""
        if entry.job.stored:
            entry.job = replace(entry.job, holder=None)
            self.journal.save(entry.record())
            return
        self.counters["lost"] += 1
        self._unqueue(entry)
        self._end(entry, error=JobLost(LOST))

    def _forget(self, entry: _Entry) -> None:
        del self._entries[entry.id]
        if entry.job.idempotency_key is not None:
            self._idempotent.pop((entry.job.client, entry.job.idempotency_key), None)
        self.journal.forget(entry.id)

    def _job(self, job_id: str) -> _Entry:
        if not self._is_job(job_id):
            raise UnknownJob(
                f"no job {job_id!r}: never submitted, or finished over {self.ttl_s:g} s ago"
            )
        return self._entries[job_id]

    def _is_job(self, job_id: str) -> bool:
        entry = self._entries.get(job_id)
        return entry is not None and not entry.is_ticket

    # Internals: time

    def _wait_s(self, work: float) -> float | None:
        """Seconds until `work` more megapixels have been done, at the measured pace."""
        rate = self.pace.work_per_s()
        return None if rate is None else work / rate

    def _eta(self, entry: _Entry, work_ahead: float | None) -> float | None:
        if entry.job.frames:
            return self._video_eta(entry, work_ahead)
        per_work = self.pace.seconds_per_work()
        if per_work is None:
            return None
        duration = per_work * entry.job.work
        if entry.status == "running" and entry.started_at is not None:
            return max(0.0, duration - (self.clock() - entry.started_at))
        if work_ahead is None:
            return None
        wait = self._wait_s(work_ahead + entry.job.work)
        return None if wait is None else wait + duration

    def _video_eta(self, entry: _Entry, work_ahead: float | None) -> float | None:
        """A video's frames left at the line's whole pace (its frames spread over every
        slot; slower while others share them)."""
        done, total = entry.progress or (0, entry.job.frames)
        left = self._wait_s(max(0, total - done) * entry.job.work)
        if left is None or entry.status == "running":
            return left
        wait = None if work_ahead is None else self._wait_s(work_ahead)
        return None if wait is None else wait + left

    def _retry_after(self, work: float) -> float:
        wait = self._wait_s(work)
        if wait is None:
            return RETRY_AFTER_UNKNOWN_S
        return min(RETRY_AFTER_MAX_S, max(1.0, math.ceil(wait)))
