"""Jobs in-process: admission, the taking and the running, over the real `Scheduler` as the line
and the real `Coalescer` as the cluster cache (tests/test_tiers.py's local parts)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from deployments.core.errors import AnimeGANError, InvalidImage, Overloaded, UnsupportedFormat
from deployments.core.fair_queue import QUANTUM
from deployments.core.jobs import Jobs, JobWork
from deployments.core.options import StylizeOptions
from deployments.core.results import Stylized
from deployments.core.scheduler import Handout, JobView, Submission, Taken
from deployments.core.settings import Settings
from deployments.core.shed_hold import ShedHold
from tests.test_tiers import PICTURE, Walk

T = TypeVar("T")
OPTIONS = StylizeOptions.build(Settings(), style="paprika")


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 20))


class LocalJobLine:
    """The walk's real `Scheduler` as the jobs' line, one ingress replica ("w") taking."""

    worker = "w"

    def __init__(self, walk: Walk) -> None:
        self.scheduler = walk.line.scheduler
        self.full = ShedHold()
        self.ended = asyncio.Event()

    def refuse_if_full(self) -> None:
        self.full.check()

    async def submit(self, job: Submission) -> JobView:
        try:
            return self.scheduler.submit(job)
        except Overloaded as refusal:
            self.full.start(refusal)
            raise

    async def record_done(self, job: Submission) -> JobView:
        return self.scheduler.record_done(job)

    async def take(self, limit: int, running: list[str], held: list[str]) -> Handout:
        return await self.scheduler.take(self.worker, limit, 0.05, running, held)

    def finish(
        self, job_id: str, *, key: str | None, error: AnimeGANError | None, computed: bool
    ) -> None:
        self.scheduler.finish(job_id, key=key, error=error, computed=computed)
        self.ended.set()


def weigh(work: JobWork) -> tuple[float, int]:
    assert isinstance(work.upload, bytes)
    if not work.upload.startswith(b"\x89PNG"):
        raise UnsupportedFormat("not a picture")
    return QUANTUM, 0


class Replica:
    """The jobs of one ingress replica, run through the walk."""

    def __init__(self) -> None:
        self.walk = Walk()
        self.line = LocalJobLine(self.walk)
        self.runs: list[str] = []
        self.jobs = Jobs(
            self.line,
            self.walk.tiers,
            self.run,
            weigh=weigh,
            uploads=None,
            app="test",
            background=self.walk.tiers.background,
        )

    async def run(self, job: Taken, work: JobWork) -> Stylized:
        self.runs.append(job.key)
        picture, cache = await self.walk.tiers.answer(job.key, self.walk.model.compute, None)
        return Stylized(picture, job.key, cache, work.options)

    async def until_ended(self, job_id: str) -> JobView:
        """Taking and running jobs until the first one ends, then `job_id`'s state."""
        taking = asyncio.create_task(self.jobs.take_forever())
        await self.line.ended.wait()
        taking.cancel()
        return self.walk.line.scheduler.view(job_id)


def test_a_stored_result_makes_the_job_done_from_the_start() -> None:
    async def scenario() -> None:
        replica = Replica()
        replica.walk.cache.coalescer.put("k", PICTURE)
        view = (await replica.jobs.submit("k", b"\x89PNG", OPTIONS, "alice")).view
        assert (view.status, view.result) == ("done", "k")
        assert replica.walk.tiers.hot.get("k") == PICTURE  # copied up on the way

    run(scenario)


def test_what_is_not_a_picture_is_refused_before_it_is_queued() -> None:
    async def scenario() -> None:
        replica = Replica()
        with pytest.raises(UnsupportedFormat):
            await replica.jobs.submit("k", b"text", OPTIONS, "alice")
        assert replica.walk.line.scheduler.stats()["jobs"] == 0

    run(scenario)


def test_a_queued_job_is_taken_run_and_ended_with_its_result() -> None:
    async def scenario() -> None:
        replica = Replica()
        view = (await replica.jobs.submit("k", b"\x89PNG", OPTIONS, "alice")).view
        assert view.status == "queued"
        ended = await replica.until_ended(view.id)
        assert (ended.status, ended.result) == ("done", "k")
        assert replica.runs == ["k"] and replica.walk.model.runs == 1
        assert not replica.jobs.running and not replica.jobs.held  # the upload is let go

    run(scenario)


def test_a_job_refused_while_running_ends_failed_with_the_refusal() -> None:
    async def scenario() -> None:
        replica = Replica()
        replica.walk.model.error = InvalidImage("the picture is cut short")
        view = (await replica.jobs.submit("k", b"\x89PNG", OPTIONS, "alice")).view
        ended = await replica.until_ended(view.id)
        assert ended.status == "failed" and isinstance(ended.error, InvalidImage)

    run(scenario)


def test_after_the_line_says_it_is_full_submissions_are_refused_without_asking() -> None:
    async def scenario() -> None:
        replica = Replica()
        replica.walk.line.scheduler.max_queued = 0
        for _ in range(3):
            with pytest.raises(Overloaded):
                await replica.jobs.submit("k", b"\x89PNG", OPTIONS, "alice")
        assert replica.walk.line.scheduler.stats()["refused"] == 1  # the other two: here

    run(scenario)


def test_a_retried_submission_gets_its_first_job_whatever_happened_since() -> None:
    async def scenario() -> None:
        replica = Replica()
        first = await replica.jobs.submit("k", b"\x89PNG", OPTIONS, "alice", "retry-1")
        ended = await replica.until_ended(first.view.id)
        again = await replica.jobs.submit("k", b"\x89PNG", OPTIONS, "alice", "retry-1")
        assert (first.replayed, again.replayed) == (False, True)
        assert again.view == ended  # done, with its result; nothing new queued or run
        assert replica.walk.model.runs == 1
        assert replica.walk.line.scheduler.stats()["jobs"] == 1
        other = await replica.jobs.submit("k", b"\x89PNG", OPTIONS, "bob", "retry-1")
        assert not other.replayed  # keys are the client's own

    run(scenario)
