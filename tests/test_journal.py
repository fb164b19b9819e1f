"""The journal in-process: the latest state of each job written behind, flushes, a store down."""

from __future__ import annotations

import asyncio
from typing import Any

from deployments.core.journal import Journal


class Store:
    """Records in a dict; each write waits for `gate`, and raises while `down`."""

    def __init__(self) -> None:
        self.kept: dict[str, dict[str, Any]] = {}
        self.writes = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.down = False

    async def write(self, saved: dict[str, dict[str, Any]], forgotten: list[str]) -> None:
        await self.gate.wait()
        self.writes += 1
        if self.down:
            raise ConnectionError("the store is down")
        self.kept.update(saved)
        for job_id in forgotten:
            self.kept.pop(job_id, None)

    def load(self) -> list[dict[str, Any]]:
        return list(self.kept.values())


def record(job_id: str, status: str) -> dict[str, Any]:
    return {"job": {"id": job_id}, "status": status}


def test_changes_made_while_a_write_is_out_are_written_once_as_their_latest() -> None:
    async def scenario() -> None:
        store = Store()
        journal = Journal(store)
        store.gate.clear()
        journal.save(record("a", "queued"))
        await asyncio.sleep(0)  # the first write is out, waiting
        journal.save(record("a", "running"))
        journal.save(record("a", "done"))
        journal.save(record("b", "queued"))
        journal.forget("b")
        store.gate.set()
        await journal.flush()
        assert store.writes == 2 and store.kept == {"a": record("a", "done")}

    asyncio.run(scenario())


def test_a_store_that_fails_is_written_again_and_submissions_do_not_wait_for_it() -> None:
    async def scenario() -> None:
        store = Store()
        journal = Journal(store)
        store.down = True
        journal.save(record("a", "queued"))
        await journal.flush()  # the first failure is waited for (2 s at most), then not
        assert not journal.healthy and journal.failures == 1
        journal.save(record("b", "queued"))
        started = asyncio.get_running_loop().time()
        await journal.flush()
        assert asyncio.get_running_loop().time() - started < 0.1
        store.down = False
        await asyncio.sleep(1.2)  # the writer's retry
        assert journal.healthy and set(store.kept) == {"a", "b"}

    asyncio.run(scenario())
