"""The cluster's one line for the model: jobs and synchronous requests share its slots fairly.

Every miss waits here for a *slot*: the model replicas report how many requests each works on
at once, and no more than their sum run at a time, so the model deployment is never handed
more than it can work on. Entries wait in a `FairQueue` (round-robin between clients):

- a *job* (`POST /v1/jobs`) carries its work; an ingress replica `take`s it when its turn comes
  and reports it `finish`ed; its state is kept `ttl_s` after that, for polling;
- a *ticket* is a synchronous request's place in line: `acquire` returns when its turn comes
  (or refuses at once when the wait would exceed the caller's budget) and the caller `release`s
  the slot when done.

A result computed for a key finishes every queued job with the same key at once. Ingress
replicas are heard from at least every `take`; one silent for `lost_after_s` is gone, and the
jobs it was running fail with `job_lost` rather than stay running forever. Plain asyncio: the
scheduler actor wraps one of these.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from .errors import (
    AnimeGANError,
    Cancelled,
    IdempotencyConflict,
    JobLost,
    JobNotQueued,
    Overloaded,
    TooManyJobs,
    UnknownJob,
)
from .fair_queue import FairQueue

Status = Literal["queued", "running", "done", "failed"]

RATE_WINDOW = 32  # completions the service rate is measured over
RETRY_AFTER_UNKNOWN_S = 2.0  # before the first completions measure the rate
RETRY_AFTER_MAX_S = 3600.0


@dataclass(frozen=True)
class JobView:
    """What `GET /v1/jobs/{id}` shows of a job."""

    id: str
    status: Status
    position: int | None  # entries to be served before it, while queued
    eta_s: float | None  # seconds until its result, while queued or running and the rate known
    result: str | None  # the result's cache key, once done
    error: AnimeGANError | None  # once failed

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


class Taken(NamedTuple):
    """A job handed to an ingress replica to run: its id, its result's key and its work."""

    id: str
    key: str
    payload: Any


@dataclass
class _Entry:
    id: str
    client: str
    key: str
    submitted_at: float
    payload: Any = None  # a job's work, until an ingress replica takes it
    grant: asyncio.Future[bool] | None = None  # a ticket's turn: True, or False if withdrawn
    worker: str | None = None  # the ingress replica holding it
    status: Status = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    error: AnimeGANError | None = None
    idempotency_key: str | None = None  # the submission's, kept as long as the job is

    @property
    def is_ticket(self) -> bool:
        return self.grant is not None


@dataclass
class _Taker:
    """An ingress replica waiting in `take` for up to `limit` jobs."""

    worker: str
    limit: int
    jobs: list[Taken] = field(default_factory=list)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ServiceRate:
    """Completions per second of model work while any was running, over the last few."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._busy_s = 0.0  # time with at least one slot in use
        self._running = 0
        self._changed_at = clock()
        self._done: deque[tuple[float, float]] = deque(maxlen=RATE_WINDOW)  # (busy_s, duration)

    def started(self) -> None:
        self._tick()
        self._running += 1

    def stopped(self, duration_s: float | None) -> None:
        """A slot freed; `duration_s` if it did model work (hits and refusals do not count)."""
        self._tick()
        self._running -= 1
        if duration_s is not None:
            self._done.append((self._busy_s, duration_s))

    def per_s(self) -> float | None:
        if len(self._done) < 2 or self._done[-1][0] <= self._done[0][0]:
            return None
        return (len(self._done) - 1) / (self._done[-1][0] - self._done[0][0])

    def duration_s(self) -> float | None:
        return sum(d for _, d in self._done) / len(self._done) if self._done else None

    def _tick(self) -> None:
        now = self.clock()
        if self._running > 0:
            self._busy_s += now - self._changed_at
        self._changed_at = now


class Scheduler:
    """The fair line, its slots, the jobs' states and the ingress replicas serving them."""

    def __init__(
        self,
        *,
        max_queued: int,
        max_per_client: int,
        ttl_s: float,
        lost_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_queued = max_queued
        self.max_per_client = max_per_client
        self.ttl_s = ttl_s
        self.lost_after_s = lost_after_s
        self.clock = clock
        self.capacity = 0  # slots: requests the model replicas take at once, all together
        self.running = 0
        self.rate = ServiceRate(clock)
        self.queue = FairQueue()
        self._entries: dict[str, _Entry] = {}  # queued and running entries, finished jobs
        self._takers: list[_Taker] = []
        self._workers: dict[str, float] = {}  # ingress replica -> last heard from
        self._idempotent: dict[tuple[str, str], str] = {}  # (client, Idempotency-Key) -> job
        self.counters = dict.fromkeys(("jobs", "tickets", "shed", "refused", "lost", "replayed"), 0)

    # Slots

    def set_capacity(self, slots: int) -> None:
        self.capacity = slots
        self._dispatch()

    # Jobs

    def submit(
        self,
        job_id: str,
        client: str,
        key: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
    ) -> JobView:
        """Queue a job; raises `Overloaded` when the line is full, `TooManyJobs` per client.

        With an `idempotency_key` the client used before for a job still known, that job is
        answered instead (if it was for the same `key`; else `IdempotencyConflict`)."""
        replayed = self._replayed(client, idempotency_key, key)
        if replayed is not None:
            return replayed
        if len(self.queue) >= self.max_queued:
            self.counters["refused"] += 1
            raise Overloaded(
                f"the queue is full ({self.max_queued:,} waiting); retry later",
                retry_after_s=self._retry_after(len(self.queue)),
            )
        waiting = self.queue.queued_by(client)
        if waiting >= self.max_per_client:
            self.counters["refused"] += 1
            first = next(e for e in self.queue.order() if self._entries[e].client == client)
            raise TooManyJobs(
                f"you have {waiting} jobs waiting, the most one client may; "
                "retry when one has finished",
                retry_after_s=self._retry_after(self.queue.position(first) + 1),
            )
        entry = _Entry(job_id, client, key, self.clock(), payload=payload)
        self._add(entry)
        self._remember(entry, idempotency_key)
        self._dispatch()
        return self.view(job_id)

    def record_done(
        self, job_id: str, client: str, key: str, *, idempotency_key: str | None = None
    ) -> JobView:
        """A job whose result is already stored: done from the start (or, as for `submit`,
        the job its `idempotency_key` already names)."""
        replayed = self._replayed(client, idempotency_key, key)
        if replayed is not None:
            return replayed
        now = self.clock()
        entry = _Entry(job_id, client, key, now, status="done", finished_at=now)
        self._entries[job_id] = entry
        self._remember(entry, idempotency_key)
        return self.view(job_id)

    async def take(self, worker: str, limit: int, wait_s: float) -> list[Taken]:
        """Up to `limit` jobs for `worker` to run, waiting up to `wait_s` for one."""
        self._workers[worker] = self.clock()
        if limit <= 0:
            return []
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
        return taker.jobs

    def finish(
        self,
        job_id: str,
        *,
        key: str | None = None,
        error: AnimeGANError | None = None,
        computed: bool = False,
    ) -> None:
        """A running job's end: its result `key` (`computed` if the model ran for it), or the
        `error` that refused it."""
        entry = self._entries.get(job_id)
        if entry is None or entry.status != "running":
            return  # lost and failed already, or from before a restart of the scheduler
        self._free(entry, computed=computed)
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
        self.queue.remove(job_id)
        self._end(entry, error=Cancelled("the job was cancelled before it ran"))

    def view(self, job_id: str) -> JobView:
        entry = self._job(job_id)
        position = self.queue.position(job_id) if entry.status == "queued" else None
        result = entry.key if entry.status == "done" else None
        return JobView(
            job_id, entry.status, position, self._eta(entry, position), result, entry.error
        )

    def views(self, job_ids: Iterable[str]) -> dict[str, JobView]:
        """The views of those ids still known (watchers ask for many at once)."""
        return {i: self.view(i) for i in job_ids if self._is_job(i)}

    # Tickets

    async def acquire(
        self, ticket: str, worker: str, client: str, key: str, *, max_wait_s: float
    ) -> float | None:
        """Wait for a slot; None once granted, or the seconds to retry after when refused.

        Refused at once when the line is full, or when its measured pace says the wait would
        exceed `max_wait_s` (before the pace is known, every ticket waits its turn).
        """
        self._workers[worker] = self.clock()
        if len(self.queue) >= self.max_queued:
            self.counters["shed"] += 1
            return self._retry_after(len(self.queue))
        if self.queue or self.running >= self.capacity:
            wait_s = self._wait_s(self.queue.position_of_next(client) + 1)
            if wait_s is not None and wait_s > max_wait_s:
                self.counters["shed"] += 1
                return max(1.0, math.ceil(wait_s - max_wait_s))
        grant: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._add(_Entry(ticket, client, key, self.clock(), grant=grant, worker=worker))
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
        """Forget finished jobs past their TTL; fail what lost ingress replicas were running."""
        now = self.clock()
        lost = {w for w, seen in self._workers.items() if now - seen > self.lost_after_s}
        for worker in lost:
            del self._workers[worker]
        for entry in list(self._entries.values()):
            if entry.finished_at is not None and now - entry.finished_at > self.ttl_s:
                del self._entries[entry.id]
                if entry.idempotency_key is not None:
                    self._idempotent.pop((entry.client, entry.idempotency_key), None)
            elif entry.worker in lost:
                self._lose(entry)
        self._dispatch()

    def stats(self) -> dict[str, Any]:
        rate = self.rate.per_s()
        return {
            "slots": self.capacity,
            "running": self.running,
            "queued": len(self.queue),
            "per_s": None if rate is None else round(rate, 2),
            "ingress_replicas": len(self._workers),
            **self.counters,
        }

    # Internals

    def _replayed(self, client: str, idempotency_key: str | None, key: str) -> JobView | None:
        """The view of the job `client` submitted with `idempotency_key`, if any."""
        job_id = (
            None if idempotency_key is None else self._idempotent.get((client, idempotency_key))
        )
        if job_id is None:
            return None
        if self._entries[job_id].key != key:
            raise IdempotencyConflict(
                "this Idempotency-Key was sent before with another picture or other options; "
                "use a new key for new work"
            )
        self.counters["replayed"] += 1
        return self.view(job_id)

    def _remember(self, entry: _Entry, idempotency_key: str | None) -> None:
        self.counters["jobs"] += 1
        if idempotency_key is not None:
            entry.idempotency_key = idempotency_key
            self._idempotent[(entry.client, idempotency_key)] = entry.id

    def _add(self, entry: _Entry) -> None:
        self._entries[entry.id] = entry
        self.queue.push(entry.id, entry.client)

    def _dispatch(self) -> None:
        """Start entries in fair order while slots are free (a job needs a waiting taker)."""
        while self.running < self.capacity and (head := self.queue.peek()) is not None:
            entry = self._entries[head]
            taker = next((t for t in self._takers if len(t.jobs) < t.limit), None)
            if entry.grant is None and taker is None:
                # No ingress replica can run a job right now; a ticket need not wait for one.
                ticket = next((e for e in self.queue.order() if self._entries[e].is_ticket), None)
                if ticket is None:
                    break
                entry = self._entries[ticket]
            if entry.id == head:
                self.queue.pop()  # its client goes to the back of the round
            else:
                self.queue.remove(entry.id)
            self._start(entry)
            if entry.grant is not None:
                entry.grant.set_result(True)
            elif taker is not None:
                entry.worker = taker.worker
                taker.jobs.append(Taken(entry.id, entry.key, entry.payload))
                entry.payload = None
        for taker in self._takers:
            if taker.jobs and not taker.done.done():
                taker.done.set_result(None)

    def _start(self, entry: _Entry) -> None:
        entry.status = "running"
        entry.started_at = self.clock()
        self.running += 1
        self.rate.started()

    def _free(self, entry: _Entry, *, computed: bool) -> None:
        self.running -= 1
        started = entry.started_at if entry.started_at is not None else self.clock()
        self.rate.stopped(self.clock() - started if computed else None)

    def _end(self, entry: _Entry, *, error: AnimeGANError | None) -> None:
        entry.status = "failed" if error is not None else "done"
        entry.error = error
        entry.finished_at = self.clock()
        entry.payload = None

    def _finish_same(self, key: str) -> None:
        """A result for `key` exists now: queued jobs that want it are done."""
        for entry in list(self._entries.values()):
            if entry.key == key and entry.status == "queued" and not entry.is_ticket:
                self.queue.remove(entry.id)
                self._end(entry, error=None)

    def _lose(self, entry: _Entry) -> None:
        if entry.is_ticket:
            self.release(entry.id)
        elif entry.status == "running":
            self.counters["lost"] += 1
            self._free(entry, computed=False)
            self._end(
                entry,
                error=JobLost("the ingress replica running this job stopped; submit it again"),
            )

    def _job(self, job_id: str) -> _Entry:
        if not self._is_job(job_id):
            raise UnknownJob(
                f"no job {job_id!r}: never submitted, or finished over {self.ttl_s:g} s ago"
            )
        return self._entries[job_id]

    def _is_job(self, job_id: str) -> bool:
        entry = self._entries.get(job_id)
        return entry is not None and not entry.is_ticket

    def _wait_s(self, leaving: int) -> float | None:
        """Seconds until `leaving` more entries have started, at the measured pace."""
        rate = self.rate.per_s()
        return None if rate is None else leaving / rate

    def _eta(self, entry: _Entry, position: int | None) -> float | None:
        duration = self.rate.duration_s()
        if duration is None:
            return None
        if entry.status == "running" and entry.started_at is not None:
            return max(0.0, duration - (self.clock() - entry.started_at))
        if position is None:
            return None
        wait = self._wait_s(position + 1)
        return None if wait is None else wait + duration

    def _retry_after(self, leaving: int) -> float:
        wait = self._wait_s(leaving)
        if wait is None:
            return RETRY_AFTER_UNKNOWN_S
        return min(RETRY_AFTER_MAX_S, max(1.0, math.ceil(wait)))
