"""The line's records written behind to a store that outlives its process (the GCS, or Redis).

The line tells the journal of every change of a job as it happens (`save`, `forget`); one
writer task sends the latest state of each changed job, so a job that changes three times
while a write is out is written once more, not three times. A submission waits for `flush`
before it is answered: a job whose id was handed out is on record. A store that fails is
retried; the line goes on meanwhile, its records in memory.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

log = logging.getLogger("ray.serve")

RETRY_S = 1.0
FLUSH_WAIT_S = 2.0  # a submission waits no longer for a store that does not answer


class Records(Protocol):
    """A store of job records by id."""

    async def write(self, saved: dict[str, dict[str, Any]], forgotten: list[str]) -> None: ...

    def load(self) -> list[dict[str, Any]]:
        """Every record kept (called once, as the line starts)."""
        ...


class Journal:
    """The line's `Journal`: changes kept in order per job, written behind to `records`."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self._pending: dict[str, dict[str, Any] | None] = {}  # id -> latest; None: forget it
        self._writer: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.failures = 0
        self.healthy = True  # the last write succeeded: submissions wait for theirs

    def save(self, record: dict[str, Any]) -> None:
        self._pending[record["job"]["id"]] = record
        self._kick()

    def forget(self, job_id: str) -> None:
        self._pending[job_id] = None
        self._kick()

    async def flush(self) -> None:
        """Wait until what was saved so far is written (or FLUSH_WAIT_S has passed); at once
        while the store is failing."""
        if not self.healthy:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), FLUSH_WAIT_S)
        except TimeoutError:
            log.warning("the job records' store is slow: a job was answered before written")

    def _kick(self) -> None:
        self._idle.clear()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            saved = {i: r for i, r in batch.items() if r is not None}
            forgotten = [i for i, r in batch.items() if r is None]
            try:
                await self.records.write(saved, forgotten)
            except Exception as exc:  # the store is down: keep the batch, newer changes win
                self.failures += 1
                if self.healthy:
                    log.warning("writing job records failed (%s: %s)", type(exc).__name__, exc)
                self.healthy = False
                self._pending = {**batch, **self._pending}
                self._idle.set()  # nobody waits for a store that is down
                await asyncio.sleep(RETRY_S)
            else:
                self.healthy = True
        self._idle.set()
