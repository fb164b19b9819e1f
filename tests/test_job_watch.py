"""Job event streams in-process: one poll for all streams, status at once, places throttled."""

from __future__ import annotations

import asyncio

from deployments.core.job_watch import JobWatch
from deployments.core.scheduler import JobView


def queued(job: str, position: int) -> JobView:
    return JobView(job, "queued", position, float(position), None, None)


class Board:
    """What the scheduler would answer, and how many times it was asked."""

    def __init__(self) -> None:
        self.views: dict[str, JobView] = {}
        self.polls = 0

    async def fetch(self, ids: list[str]) -> dict[str, JobView]:
        self.polls += 1
        return {i: self.views[i] for i in ids if i in self.views}


async def collect(stream: object, into: list[JobView | None]) -> None:
    async for view in stream:  # type: ignore[attr-defined]
        into.append(view)


def test_a_stream_gets_places_at_most_every_interval_then_ends_with_the_job() -> None:
    async def scenario() -> list[JobView | None]:
        board = Board()
        watch = JobWatch(board.fetch, poll_s=0.01, position_every_s=0.1, keepalive_s=5)
        board.views["j"] = queued("j", 9)
        seen: list[JobView | None] = []
        task = asyncio.create_task(collect(watch.follow(queued("j", 9)), seen))
        for position in range(8, -1, -1):  # the line moves every 20 ms
            await asyncio.sleep(0.02)
            board.views["j"] = queued("j", position)
        await asyncio.sleep(0.05)
        board.views["j"] = JobView("j", "running", None, 0.3, None, None)
        await asyncio.sleep(0.03)
        board.views["j"] = JobView("j", "done", None, None, "key", None)
        await asyncio.wait_for(task, 2)
        return seen

    seen = asyncio.run(scenario())
    statuses = [v.status for v in seen if v is not None]
    assert statuses[0] == "queued" and statuses[-2:] == ["running", "done"]
    places = [v.position or 0 for v in seen if v is not None and v.status == "queued"]
    assert places[0] == 9
    assert places == sorted(places, reverse=True)
    assert 2 <= len(places) <= 4  # 9 moves in ~0.2 s, at most one per 0.1 s


def test_streams_share_one_poll_and_a_finished_job_ends_at_once() -> None:
    async def scenario() -> tuple[int, list[JobView | None]]:
        board = Board()
        watch = JobWatch(board.fetch, poll_s=0.05)
        for job in "abc":
            board.views[job] = queued(job, 1)
        tasks = [asyncio.create_task(collect(watch.follow(queued(job, 1)), [])) for job in "abc"]
        await asyncio.sleep(0.22)
        polls = board.polls
        for job in "abc":
            board.views[job] = JobView(job, "done", None, None, "k", None)
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        done: list[JobView | None] = []
        await collect(watch.follow(board.views["a"]), done)
        return polls, done

    polls, done = asyncio.run(scenario())
    assert 3 <= polls <= 6  # one poll per round for the three streams, not three
    assert [v.status for v in done if v is not None] == ["done"]


def test_a_quiet_stream_sends_keepalives_and_a_forgotten_job_ends_it() -> None:
    async def scenario() -> list[JobView | None]:
        board = Board()
        watch = JobWatch(board.fetch, poll_s=0.01, keepalive_s=0.05)
        board.views["j"] = queued("j", 3)
        seen: list[JobView | None] = []
        task = asyncio.create_task(collect(watch.follow(queued("j", 3)), seen))
        await asyncio.sleep(0.18)
        del board.views["j"]  # expired
        await asyncio.wait_for(task, 2)
        return seen

    seen = asyncio.run(scenario())
    assert seen[0] is not None
    assert seen[1:].count(None) >= 2
    assert all(v is None for v in seen[1:])


def test_places_slow_down_as_more_streams_share_the_budget() -> None:
    watch = JobWatch(Board().fetch, position_every_s=0.5, places_per_s=50)
    watch._followers.update({f"j{i}": 1 for i in range(1000)})
    assert watch._every_s() == 20.0
    watch._followers.clear()
    assert watch._every_s() == 0.5


def test_a_job_that_ran_between_two_polls_still_reports_running() -> None:
    async def scenario() -> list[JobView | None]:
        board = Board()
        watch = JobWatch(board.fetch, poll_s=0.05)
        board.views["j"] = JobView("j", "done", None, None, "key", None)
        seen: list[JobView | None] = []
        await asyncio.wait_for(collect(watch.follow(queued("j", 0)), seen), 2)
        return seen

    seen = asyncio.run(scenario())
    assert [v.status for v in seen if v is not None] == ["queued", "running", "done"]
