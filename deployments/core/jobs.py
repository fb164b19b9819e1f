"""Jobs: admitted by any ingress replica, queued in the line, run by the one the line hands it to.

Admission answers a stored result at once (the job is done from the start) and refuses what is
not an image before queueing it, from its header alone; the work waits in the line. Each
ingress replica takes the jobs whose turn has come, runs each through the same walk as a
synchronous request (it holds its slot already), and reports its end to the line.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from .background import Background
from .errors import AnimeGANError, BadParameter
from .options import StylizeOptions
from .results import Stylized
from .scheduler import JobView, Taken
from .tiers import Tiers

log = logging.getLogger("ray.serve")

MAX_RUNNING_JOBS = 64  # jobs one ingress replica runs at once (the line's slots bound them all)
RETRY_TAKE_S = 1.0
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as Stripe's keys are


@dataclass(frozen=True)
class JobWork:
    """What a queued job carries until an ingress replica takes it."""

    image: bytes
    options: StylizeOptions


@dataclass(frozen=True)
class Admitted:
    """A submission's answer: its job, and whether an earlier submission with the same
    Idempotency-Key made it (`replayed`: nothing new was queued)."""

    view: JobView
    replayed: bool = False

    @property
    def outcome(self) -> str:
        """How it is counted: `replayed`, `hit` (its result was stored already) or `queued`."""
        if self.replayed:
            return "replayed"
        return "hit" if self.view.status == "done" else "queued"


def idempotency_key(value: str | None) -> str | None:
    """A client's Idempotency-Key, checked: 1 to 255 visible ASCII characters."""
    if value is None or IDEMPOTENCY_KEY.fullmatch(value):
        return value
    raise BadParameter("Idempotency-Key must be 1 to 255 visible ASCII characters")


class JobLine(Protocol):
    """The line, as jobs need it."""

    def refuse_if_full(self) -> None:
        """Raise `Overloaded` at once while the line has just said it is full."""

    async def submit(
        self, job_id: str, client: str, key: str, work: JobWork, idempotency_key: str | None
    ) -> JobView: ...

    async def record_done(
        self, job_id: str, client: str, key: str, idempotency_key: str | None
    ) -> JobView: ...

    async def take(self, limit: int) -> list[Taken]: ...

    def finish(
        self, job_id: str, *, key: str | None, error: AnimeGANError | None, computed: bool
    ) -> None: ...


# A job's answer for its key, within the request deadline.
Run = Callable[[str, JobWork], Awaitable[Stylized]]


class Jobs:
    """One ingress replica's side of the jobs: admission, and its share of the running."""

    def __init__(
        self,
        line: JobLine,
        tiers: Tiers,
        run: Run,
        *,
        check: Callable[[bytes], None],
        background: Background,
    ) -> None:
        self.line = line
        self.tiers = tiers
        self.run = run
        self.check = check  # refuses what is not an image within the limits
        self.background = background
        self.running = 0

    async def submit(
        self,
        key: str,
        image: bytes,
        options: StylizeOptions,
        client: str,
        idempotency: str | None = None,
    ) -> Admitted:
        """Queue a job for `key`, or record it done if its result is stored; with an
        `idempotency` key the client used before, the job it made then."""
        job_id = secrets.token_urlsafe(16)  # 128 random bits: not guessable
        if self.tiers.hot.get(key) is not None:  # served lately here: before any refusal
            view = await self.line.record_done(job_id, client, key, idempotency)
        else:
            self.line.refuse_if_full()  # a refusal then costs no actor call
            self.check(image)
            if await self.tiers.lookup(key) is not None:
                view = await self.line.record_done(job_id, client, key, idempotency)
            else:
                work = JobWork(image, options)
                view = await self.line.submit(job_id, client, key, work, idempotency)
        return Admitted(view, replayed=view.id != job_id)

    async def take_forever(self) -> None:
        """Take jobs whose turn has come, and run each beside the others."""
        while True:
            try:
                taken = await self.line.take(MAX_RUNNING_JOBS - self.running)
            except Exception as exc:  # never let the taking die: jobs would wait forever
                log.error("taking jobs failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(RETRY_TAKE_S)
                continue
            for job in taken:
                self.background.spawn(self._run(job))

    async def _run(self, job: Taken) -> None:
        self.running += 1
        result: Stylized | None = None
        error: AnimeGANError | None = None
        try:
            result = await self.run(job.key, job.payload)
        except AnimeGANError as exc:
            error = exc
        except Exception as exc:
            log.error("job %s failed: %s: %s", job.id, type(exc).__name__, exc)
            error = AnimeGANError("the service failed this job; submit it again")
        finally:
            self.running -= 1
        computed = result is not None and result.cache == "miss"
        key = job.key if result is not None else None
        self.line.finish(job.id, key=key, error=error, computed=computed)
