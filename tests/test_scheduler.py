"""The line for the model in-process with asyncio and a hand-driven clock: no Ray, no actor."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from deployments.core.errors import (
    IdempotencyConflict,
    InvalidImage,
    JobNotQueued,
    Overloaded,
    TooManyJobs,
    UnknownJob,
)
from deployments.core.fair_queue import QUANTUM
from deployments.core.pace import Pace
from deployments.core.scheduler import Handout, JobView, Scheduler, Submission, Taken

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 5))


def line(clock: Clock, *, slots: int = 1, **limits: Any) -> Scheduler:
    limits = {"max_queued": 100, "max_per_client": 50, "ttl_s": 600, **limits}
    scheduler = Scheduler(lost_after_s=10, clock=clock, **limits)
    scheduler.set_capacity(slots)
    return scheduler


def submit(scheduler: Scheduler, job_id: str, client: str, key: str, **job: Any) -> JobView:
    return scheduler.submit(Submission(job_id, client, key, **job))


def record_done(scheduler: Scheduler, job_id: str, client: str, key: str, **job: Any) -> JobView:
    return scheduler.record_done(Submission(job_id, client, key, **job))


async def take(
    scheduler: Scheduler, worker: str = "w", limit: int = 10, running: list[str] | None = None
) -> list[str]:
    """The jobs handed to `worker`, which (unless `running` says otherwise) is still running
    every job it was handed before."""
    if running is None:
        running = [job.id for job in scheduler._runs.values() if job.worker == worker]
    handout = await scheduler.take(worker, limit, wait_s=0.01, running=running)
    return [job.id for job in handout.jobs]


async def pace(scheduler: Scheduler, clock: Clock, *, every_s: float, count: int = 3) -> None:
    """Run `count` model-work jobs one after another, `every_s` apart: the measured pace."""
    for i in range(count):
        submit(scheduler, f"pace{i}", "pacer", f"pace-key{i}")
        (job,) = await take(scheduler)
        clock.now += every_s
        scheduler.finish(job, key=f"pace-key{i}", computed=True)


def test_jobs_wait_for_a_slot_and_are_taken_fairly_between_clients() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, slots=1)
        for i in range(3):
            submit(scheduler, f"bulk{i}", "bulk", f"k{i}")
        submit(scheduler, "lone", "lone", "k-lone")
        assert scheduler.view("lone").position == 1  # after bulk0's turn, not after all three
        handout = await scheduler.take("w", 10, wait_s=0.01)
        assert handout == Handout([Taken("bulk0", "k0", stored=False, client="bulk")], drop=[])
        assert await take(scheduler) == []  # the one slot is busy
        assert scheduler.view("bulk0").status == "running"
        scheduler.finish("bulk0", key="k0", computed=True)
        assert scheduler.view("bulk0").status == "done"
        assert scheduler.view("bulk0").result == "k0"
        assert await take(scheduler) == ["lone"]

    run(scenario)


def test_a_take_waits_until_a_job_arrives() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=2)
        waiting = asyncio.create_task(scheduler.take("w", 5, wait_s=2))
        await asyncio.sleep(0.01)
        submit(scheduler, "j", "c", "k")
        assert (await waiting).jobs == [("j", "k", False, "c")]

    run(scenario)


def test_no_slots_until_the_model_replicas_report_them() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=0)
        submit(scheduler, "j", "c", "k")
        assert await take(scheduler) == []
        scheduler.set_capacity(4)
        assert await take(scheduler) == ["j"]

    run(scenario)


def test_eta_comes_from_the_measured_pace_and_is_unknown_before() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, slots=1)
        submit(scheduler, "first", "c", "k")
        assert scheduler.view("first").eta_s is None
        scheduler.finish(*await take(scheduler), key="k")  # a hit: says nothing of the pace
        await pace(scheduler, clock, every_s=0.5)
        submit(scheduler, "a", "c", "ka")
        submit(scheduler, "b", "c", "kb")
        await take(scheduler)  # a runs
        clock.now += 0.2
        assert scheduler.view("a").eta_s == pytest.approx(0.3)
        view = scheduler.view("b")
        assert (view.position, view.eta_s) == (0, pytest.approx(1 / 2.0 + 0.5))
        clock.now += 0.3
        scheduler.finish("a", key="ka", computed=True)
        clock.now += 100  # idle: does not slow the measured pace
        await take(scheduler)
        clock.now += 0.5
        scheduler.finish("b", key="kb", computed=True)
        assert scheduler.pace.work_per_s() == pytest.approx(2.0 * QUANTUM)

    run(scenario)


def test_a_full_queue_refuses_with_a_retry_after_from_its_pace() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, slots=1, max_queued=4)
        await pace(scheduler, clock, every_s=0.5)
        for i in range(5):  # one runs, four wait
            submit(scheduler, f"j{i}", f"c{i}", f"k{i}")
            await take(scheduler)
        with pytest.raises(Overloaded) as refused:
            submit(scheduler, "late", "late", "k")
        assert refused.value.retry_after_s == 2  # 4 waiting at 2 per second
        assert scheduler.stats()["refused"] == 1

    run(scenario)


def test_one_client_may_queue_only_so_many_jobs() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=0, max_per_client=2)
        submit(scheduler, "a", "greedy", "k1")
        submit(scheduler, "b", "greedy", "k2")
        with pytest.raises(TooManyJobs) as refused:
            submit(scheduler, "c", "greedy", "k3")
        assert refused.value.retry_after_s is not None
        submit(scheduler, "d", "modest", "k4")  # others are not affected

    run(scenario)


def test_a_result_for_a_key_finishes_every_queued_job_that_wants_it() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        submit(scheduler, "a", "c1", "same")
        submit(scheduler, "b", "c2", "same")
        submit(scheduler, "c", "c3", "other")
        assert await take(scheduler) == ["a"]
        scheduler.finish("a", key="same", computed=True)
        assert scheduler.view("b").status == "done"
        assert scheduler.view("b").result == "same"
        assert await take(scheduler) == ["c"]

    run(scenario)


def test_a_failed_job_keeps_its_error_and_shares_nothing() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        submit(scheduler, "a", "c1", "same")
        submit(scheduler, "b", "c2", "same")
        await take(scheduler)
        scheduler.finish("a", key=None, error=InvalidImage("broken"))
        view = scheduler.view("a")
        assert view.status == "failed" and view.error is not None
        assert (view.error.code, view.error.message) == ("invalid_image", "broken")
        assert scheduler.view("b").status == "queued"

    run(scenario)


def test_only_a_queued_job_can_be_cancelled() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        submit(scheduler, "a", "c", "k1")
        submit(scheduler, "b", "c", "k2")
        await take(scheduler)
        with pytest.raises(JobNotQueued):
            scheduler.cancel("a")
        scheduler.cancel("b")
        view = scheduler.view("b")
        assert (view.status, view.error and view.error.code) == ("failed", "cancelled")
        with pytest.raises(UnknownJob):
            scheduler.cancel("never")

    run(scenario)


def test_finished_jobs_are_forgotten_after_their_ttl() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, ttl_s=60)
        record_done(scheduler, "cached", "c", "k")
        assert scheduler.view("cached").result == "k"
        clock.now += 59
        scheduler.sweep()
        scheduler.view("cached")
        clock.now += 2
        scheduler.sweep()
        with pytest.raises(UnknownJob):
            scheduler.view("cached")

    run(scenario)


def test_jobs_of_a_silent_ingress_replica_fail_and_its_slots_come_back() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, slots=2)
        submit(scheduler, "a", "c", "k1")
        assert await take(scheduler, worker="doomed") == ["a"]
        granted = asyncio.create_task(scheduler.acquire("t", "doomed", "c", "k2", max_wait_s=10))
        assert await granted is None
        assert scheduler.running == 2
        clock.now += 5
        await take(scheduler, worker="alive")  # heard from: not lost
        clock.now += 6
        scheduler.sweep()
        view = scheduler.view("a")
        assert (view.status, view.error and view.error.code) == ("failed", "job_lost")
        assert scheduler.running == 0
        scheduler.finish("a", key="k1", computed=True)  # too late: stays failed
        assert scheduler.view("a").status == "failed"

    run(scenario)


def test_a_ticket_is_granted_at_once_while_a_slot_is_free_then_waits_its_turn() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        assert await scheduler.acquire("t1", "w", "a", "k1", max_wait_s=10) is None
        second = asyncio.create_task(scheduler.acquire("t2", "w", "b", "k2", max_wait_s=10))
        await asyncio.sleep(0.01)
        submit(scheduler, "j", "c", "k3")
        assert not second.done()
        scheduler.release("t1", key="k1", computed=True)
        assert await second is None  # t2 was ahead of the job
        assert await take(scheduler) == []
        scheduler.release("t2")
        assert await take(scheduler) == ["j"]


def test_a_ticket_does_not_wait_behind_a_job_no_replica_can_take() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        submit(scheduler, "j", "a", "k1")  # no ingress replica is taking jobs
        assert await scheduler.acquire("t", "w", "b", "k2", max_wait_s=10) is None
        assert scheduler.view("j").status == "queued"

    run(scenario)


def test_a_ticket_is_refused_when_the_pace_says_it_would_wait_too_long() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, slots=1)
        await pace(scheduler, clock, every_s=1.0)  # one per second
        assert await scheduler.acquire("running", "w", "c", "k0", max_wait_s=2.5) is None
        waiting = [
            asyncio.create_task(scheduler.acquire(f"t{i}", "w", "c", f"k{i}", max_wait_s=2.5))
            for i in range(1, 3)
        ]
        await asyncio.sleep(0.01)
        # Two ahead of it and one running: 3 s > 2.5 s.
        assert await scheduler.acquire("late", "w", "c", "k", max_wait_s=2.5) == 1
        assert scheduler.stats()["shed"] == 1
        # A newcomer's turn comes after one of c's: 2 s.
        newcomer = asyncio.create_task(scheduler.acquire("new", "w", "new", "k", max_wait_s=2.5))
        await asyncio.sleep(0.01)
        assert scheduler.queue.order() == ["t1", "new", "t2"]
        scheduler.release("t1")  # gives up its place in line: t2 takes c's turn
        assert await waiting[0] is not None
        scheduler.release("running")
        assert await waiting[1] is None
        assert not newcomer.done()
        scheduler.release("t2")
        assert await newcomer is None

    run(scenario)


def test_a_computed_ticket_finishes_queued_jobs_with_its_key() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        assert await scheduler.acquire("t", "w", "c", "same", max_wait_s=10) is None
        submit(scheduler, "j", "c2", "same")
        scheduler.release("t", key="same", computed=True)
        assert scheduler.view("j").status == "done"

    run(scenario)


def test_the_pace_counts_only_busy_time_and_work() -> None:
    clock = Clock()
    pace = Pace(clock)
    assert pace.work_per_s() is None
    for work in (1.0, 2.0, 2.0):
        pace.started()
        clock.now += 0.25 * work
        pace.stopped(0.25 * work, work)
        clock.now += 50  # idle
    assert pace.work_per_s() == pytest.approx(4.0)  # 4 megapixels in the last 1 busy second
    assert pace.seconds_per_work() == pytest.approx(0.25)


def test_a_ticket_is_refused_when_the_line_is_full_even_before_its_pace_is_known() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=0, max_queued=2)
        submit(scheduler, "a", "c", "k1")
        submit(scheduler, "b", "c", "k2")
        assert await scheduler.acquire("t", "w", "c2", "k", max_wait_s=10) == 2.0
        assert scheduler.stats()["shed"] == 1

    run(scenario)


def test_an_idempotency_key_names_one_job_of_one_client_until_the_job_is_forgotten() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, ttl_s=60, max_per_client=1)
        first = submit(scheduler, "a", "alice", "k1", idempotency_key="order-7")
        # The client's limit is reached, yet the retry is answered: it queues nothing.
        again = submit(scheduler, "b", "alice", "k1", idempotency_key="order-7")
        assert again == first and scheduler.stats()["replayed"] == 1
        with pytest.raises(IdempotencyConflict):
            submit(scheduler, "c", "alice", "k2", idempotency_key="order-7")
        with pytest.raises(IdempotencyConflict):  # a stored result's record_done, the same
            record_done(scheduler, "d", "alice", "k2", idempotency_key="order-7")
        assert submit(scheduler, "e", "bob", "k2", idempotency_key="order-7").id == "e"
        assert scheduler.stats()["jobs"] == 2
        await take(scheduler)
        scheduler.finish("a", key="k1")
        clock.now += 61
        scheduler.sweep()  # "a" is forgotten, and with it alice's key
        done = record_done(scheduler, "f", "alice", "k2", idempotency_key="order-7")
        assert (done.id, done.status) == ("f", "done")

    run(scenario)


# -- records that outlive the line ------------------------------------------------------------


class MemoryJournal:
    """The records as a journal keeps them: the latest of each job."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def save(self, record: dict[str, Any]) -> None:
        self.records[record["job"]["id"]] = record

    def forget(self, job_id: str) -> None:
        self.records.pop(job_id, None)


def journaled(clock: Clock, journal: MemoryJournal, **limits: Any) -> Scheduler:
    scheduler = Scheduler(
        max_queued=100, max_per_client=50, ttl_s=600, clock=clock, journal=journal, **limits
    )
    scheduler.set_capacity(1)
    return scheduler


def test_a_restarted_line_picks_up_queued_running_and_finished_jobs_from_its_records() -> None:
    async def scenario() -> None:
        clock, journal = Clock(), MemoryJournal()
        first = journaled(clock, journal)
        submit(first, "old", "a", "k-old")
        for i in range(3):
            submit(first, f"a{i}", "a", f"ka{i}", holder="w")
            submit(first, f"b{i}", "b", f"kb{i}", holder="w")
        assert await take(first) == ["old"]
        first.finish("old", key="k-old", computed=True)
        assert await take(first) == ["b0"]  # a has had its turn
        places = {job: first.view(job).position for job in ("a0", "a1", "b1", "a2", "b2")}
        records = list(journal.records.values())  # the actor dies; its records do not

        again = journaled(clock, MemoryJournal())
        again.restore(json.loads(json.dumps(records[::-1])))  # from a store: in any order
        assert again.view("old").result == "k-old"
        assert again.view("b0").status == "running" and again.running == 1
        assert {job: again.view(job).position for job in places} == places
        again.finish("b0", key="kb0", computed=True)  # its runner never stopped
        assert again.view("b0").status == "done"
        assert await take(again, running=[]) == ["a0"]
        assert again.stats()["restored"] == 7

    run(scenario)


def test_a_job_handed_out_but_never_arrived_goes_back_to_its_place() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        submit(scheduler, "a", "c", "k1")
        submit(scheduler, "b", "c", "k2")
        assert await take(scheduler) == ["a"]
        # The next take says "a" is not running there: the answer was lost on the way.
        assert await take(scheduler, running=[]) == ["a"]
        assert scheduler.stats()["requeued"] == 1 and scheduler.view("b").position == 0

    run(scenario)


def test_a_job_its_runner_reports_running_is_running_even_if_the_records_said_queued() -> None:
    async def scenario() -> None:
        clock, journal = Clock(), MemoryJournal()
        first = journaled(clock, journal)
        submit(first, "a", "c", "k1")
        again = journaled(clock, MemoryJournal())
        again.restore(journal.records.values())  # written before "a" was handed out
        assert again.view("a").status == "queued"
        assert await take(again, running=["a"]) == []  # the runner has it
        assert again.view("a").status == "running" and again.running == 1

    run(scenario)


def test_the_line_is_bounded_by_bytes_together_and_per_client() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=0, max_queued_bytes=100, max_client_bytes=60)
        submit(scheduler, "a", "big", "k1", nbytes=60)
        with pytest.raises(TooManyJobs) as per_client:
            submit(scheduler, "b", "big", "k2", nbytes=1)
        assert per_client.value.retry_after_s is not None
        submit(scheduler, "c", "other", "k3", nbytes=40)
        with pytest.raises(Overloaded) as full:
            submit(scheduler, "d", "third", "k4", nbytes=1)
        assert full.value.retry_after_s == 2.0  # before the pace is known
        assert scheduler.stats()["queued_bytes"] == 100
        scheduler.cancel("a")
        assert scheduler.stats()["queued_bytes"] == 40
        submit(scheduler, "e", "big", "k5", nbytes=60)  # room again

    run(scenario)


def test_a_job_goes_to_the_replica_holding_its_upload_unless_it_is_stored() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=2)
        submit(scheduler, "held", "c", "k1", holder="a")
        assert await take(scheduler, worker="b") == []  # "a" will ask in a moment
        assert await take(scheduler, worker="a") == ["held"]
        submit(scheduler, "stored", "c", "k2", holder="a", stored=True)
        handout = await scheduler.take("b", 10, wait_s=0.01)
        assert handout.jobs == [
            Taken("stored", "k2", stored=True, client="c")
        ]  # b reads it from Redis

    run(scenario)


def test_a_stopped_holder_s_jobs_run_elsewhere_when_stored_and_fail_when_not() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, slots=0)
        submit(scheduler, "kept", "c", "k1", holder="gone", stored=True)
        submit(scheduler, "only-there", "c", "k2", holder="gone")
        clock.now += 11
        await take(scheduler, worker="alive")
        scheduler.sweep()
        failed = scheduler.view("only-there")
        assert (failed.status, failed.error and failed.error.code) == ("failed", "job_lost")
        scheduler.set_capacity(1)
        assert await take(scheduler, worker="alive") == ["kept"]

    run(scenario)


def test_a_replica_is_told_which_uploads_it_holds_to_let_go() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=0)
        for job in ("a", "b", "c"):
            submit(scheduler, job, "client", f"k-{job}", holder="w")
        scheduler.cancel("b")
        handout = await scheduler.take("w", 10, wait_s=0.01, held=["a", "b", "c", "unknown"])
        assert handout.drop == ["b", "unknown"]

    run(scenario)


def test_thumbnails_are_not_held_behind_another_client_s_large_pictures() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        submit(scheduler, "first", "early", "k0")
        assert await take(scheduler) == ["first"]  # the slot is busy while the others come
        for i in range(3):  # 1024 px pictures: 16 quanta each
            submit(scheduler, f"big{i}", "big", f"kb{i}", work=16 * QUANTUM)
        for i in range(8):  # 128 px thumbnails: a quarter of a quantum each
            submit(scheduler, f"thumb{i}", "thumbs", f"kt{i}", work=QUANTUM / 4)
        assert scheduler.view("big0").position == 8
        order, job = [], "first"
        for _ in range(11):
            scheduler.finish(job, key=f"k-{job}", computed=True)
            (job,) = await take(scheduler)
            order.append(job)
        assert order.index("big0") == 8  # every thumbnail first: 2 quanta of work, not 16

    run(scenario)


def test_the_eta_is_in_work_a_large_picture_takes_longer() -> None:
    async def scenario() -> None:
        clock = Clock()
        scheduler = line(clock, slots=1)
        await pace(scheduler, clock, every_s=0.5)  # a quantum per 0.5 s
        submit(scheduler, "small", "a", "ks")
        submit(scheduler, "large", "b", "kl", work=4 * QUANTUM)
        assert scheduler.view("small").eta_s == pytest.approx(0.5 + 0.5)
        assert scheduler.view("large").eta_s == pytest.approx(0.5 + 2.0 + 2.0)

    run(scenario)


def test_a_job_s_end_is_told_once_and_again_after_a_restart_if_not_delivered() -> None:
    async def scenario() -> None:
        clock, journal = Clock(), MemoryJournal()
        told: list[tuple[str, str]] = []
        first = Scheduler(
            max_queued=10,
            max_per_client=10,
            ttl_s=600,
            clock=clock,
            journal=journal,
            ended=lambda job, view: told.append((job.id, view.status)),
        )
        record_done(first, "hooked", "c", "k1", callback_url="http://127.0.0.1:9/hook")
        record_done(first, "delivered", "c", "k2", callback_url="http://127.0.0.1:9/hook")
        record_done(first, "quiet", "c", "k3")
        assert told == [("hooked", "done"), ("delivered", "done")]
        first.delivered("delivered")
        again = Scheduler(
            max_queued=10,
            max_per_client=10,
            ttl_s=600,
            clock=clock,
            ended=lambda job, view: told.append((job.id, view.status)),
        )
        again.restore(journal.records.values())
        assert told[2:] == [("hooked", "done")]  # sent again; the delivered one is not

    run(scenario)


def test_records_this_version_cannot_read_are_counted_and_left_out() -> None:
    async def scenario() -> None:
        clock, journal = Clock(), MemoryJournal()
        submit(journaled(clock, journal), "a", "c", "k1")
        again = journaled(clock, MemoryJournal())
        again.restore([{"job": {"id": "old", "shape": 0}}, *journal.records.values()])
        assert again.stats()["unreadable"] == 1 and again.view("a").status == "queued"

    run(scenario)


def test_a_running_video_gives_its_slot_back_and_its_frames_share_the_line_fairly() -> None:
    async def scenario() -> None:
        scheduler = line(Clock(), slots=1)
        submit(scheduler, "film", "a", "kf", frames=100)
        assert scheduler.view("film").progress == (0, 100)
        assert await take(scheduler) == ["film"]
        scheduler.detach("film")
        assert scheduler.running == 0  # its frames take turns of their own
        grants: list[str] = []

        async def ticket(name: str, client: str) -> None:
            refused = await scheduler.acquire(name, "w", client, "frames", max_wait_s=math.inf)
            assert refused is None
            grants.append(name)

        frames = [asyncio.create_task(ticket(f"frame{i}", "a")) for i in range(8)]
        await asyncio.sleep(0)
        picture = asyncio.create_task(ticket("picture", "b"))
        released = 0
        while released < 9:
            while len(grants) <= released:  # noqa: ASYNC110 (the grants come from the tasks)
                await asyncio.sleep(0)
            scheduler.release(grants[released], key="frames", computed=True)
            released += 1
        await asyncio.gather(*frames, picture)
        # the frame in service when it came and its lane's turn: a few frames ahead of it, not eight
        assert grants.index("picture") <= 3
        scheduler.progress("film", 0, 100, "face 10,20,30,30")  # its cut, before its frames
        scheduler.progress("film", 40, 100)
        view = scheduler.view("film")
        assert (view.kind, view.status, view.progress) == ("video", "running", (40, 100))
        assert view.crop == "face 10,20,30,30"
        scheduler.finish("film", key="kf", computed=False)
        assert scheduler.running == 0  # its slot was given back once, not twice
        assert scheduler.view("film").progress == (100, 100)

    run(scenario)
