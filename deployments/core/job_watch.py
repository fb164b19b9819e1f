"""Job event streams of one ingress replica, fed by one poll for all the jobs they follow.

Each stream gets the job's state at once, then every change: a change of status as soon as a
poll sees it, a new place in line (or a video's frames done) at most every
`position_every_s`, and `None` (a keep-alive) after `keepalive_s` without news. The stream
ends with the job (done, failed or forgotten). A job that started and ended between two polls
still reports `running` before its end.
Places in line change with every result, for every waiting job: so that a crowd of streams
does not cost the service its throughput, they share a budget of `places_per_s` updates, and
each stream's updates slow down as more streams are open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

from .scheduler import JobView

log = logging.getLogger("ray.serve")

Fetch = Callable[[list[str]], Awaitable[dict[str, JobView]]]


class JobWatch:
    """Polls the views of every followed job each `poll_s`, while any stream is open."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        poll_s: float = 0.25,
        position_every_s: float = 0.5,
        places_per_s: float = 25.0,
        keepalive_s: float = 15.0,
    ) -> None:
        self.fetch = fetch
        self.poll_s = poll_s
        self.position_every_s = position_every_s
        self.places_per_s = places_per_s
        self.keepalive_s = keepalive_s
        self._followers: Counter[str] = Counter()
        self._latest: dict[str, JobView | None] = {}  # None: the poll no longer knows the job
        self._round = asyncio.Event()
        self._poller: asyncio.Task[None] | None = None

    async def follow(self, first: JobView) -> AsyncIterator[JobView | None]:
        """`first`, then each news of the job (None: nothing new for a while)."""
        job_id = first.id
        yield first
        sent, sent_at = first, time.monotonic()
        if first.finished:
            return
        self._followers[job_id] += 1
        self._latest.setdefault(job_id, first)
        self._start_polling()
        try:
            while True:
                this_round = self._round
                try:
                    await asyncio.wait_for(this_round.wait(), self.keepalive_s)
                except TimeoutError:
                    yield None
                    continue
                view = self._latest.get(job_id, sent)
                if view is None:
                    return  # expired while followed: nothing more will come
                now = time.monotonic()
                moved = view.position != sent.position or view.progress != sent.progress
                if view.status != sent.status or (moved and now - sent_at >= self._every_s()):
                    if sent.status == "queued" and view.status == "done":
                        yield replace(view, status="running", eta_s=0.0)
                    yield view
                    sent, sent_at = view, now
                    if view.finished:
                        return
                elif now - sent_at >= self.keepalive_s:
                    yield None
                    sent_at = now
        finally:
            self._followers[job_id] -= 1
            if self._followers[job_id] <= 0:
                del self._followers[job_id]
                self._latest.pop(job_id, None)

    def _every_s(self) -> float:
        """The interval between one stream's place updates, with this many streams open."""
        return max(self.position_every_s, self._followers.total() / self.places_per_s)

    def _start_polling(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while self._followers:
            ids = list(self._followers)
            try:
                views = await self.fetch(ids)
            except Exception:  # the scheduler is down for now: streams keep what they had
                views = None
            if views is not None:
                for job_id in ids:
                    if job_id in self._followers:
                        self._latest[job_id] = views.get(job_id)
                        if job_id not in views:
                            log.warning("job %s is no longer known to the line", job_id)
            this_round, self._round = self._round, asyncio.Event()
            this_round.set()
            await asyncio.sleep(self.poll_s)
