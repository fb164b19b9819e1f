"""Jobs: admitted by any ingress replica, queued in the line, run where the line hands them.

Admission answers a stored result at once (the job is done from the start) and refuses what is
not an image before queueing it, from its header alone. The line holds only the job's record:
the upload stays here, with the replica that accepted it (and in Redis too, where it is set, so
that another replica, or the application after a restart, can run it). Each ingress replica
takes the jobs whose turn has come, runs each through the same walk as a synchronous request
(it holds its slot already), and reports its end to the line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .background import Background
from .errors import AnimeGANError, BadParameter, JobLost
from .media import Kind, Upload, size_of
from .options import StylizeOptions
from .results import Stylized, parse_faces
from .scheduler import Handout, JobView, Submission, Taken
from .tiers import Tiers

log = logging.getLogger("ray.serve")

MAX_RUNNING_JOBS = 64  # jobs one ingress replica runs at once (the line's slots bound them all)
RETRY_TAKE_S = 1.0
HELD_CHECK_S = 5.0  # how often (and after how long) the line is asked which uploads to keep
UPLOAD_TTL_S = 24 * 3600  # an upload left in Redis by a job that ended without its runner
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # visible ASCII, as Stripe's keys are
UPLOAD_LOST = "this job's upload was lost with the ingress replica holding it; submit it again"


@dataclass(frozen=True)
class JobWork:
    """A queued job's upload (bytes, or a video's spooled file), its kind and options, kept
    until its turn comes."""

    upload: Upload
    options: StylizeOptions
    kind: Kind = "image"

    def encode(self) -> bytes:
        """The options and kind as a JSON line, then the upload (as kept in Redis)."""
        assert isinstance(self.upload, bytes)
        described = {**dataclasses.asdict(self.options), "kind": self.kind}
        return json.dumps(described).encode() + b"\n" + self.upload

    @classmethod
    def decode(cls, stored: bytes) -> JobWork:
        line, _, upload = stored.partition(b"\n")
        described = json.loads(line)
        kind = described.pop("kind", "image")
        return cls(upload, StylizeOptions(**described), kind)

    def discard(self) -> None:
        """Remove a spooled upload's file (once nothing will run it here)."""
        if isinstance(self.upload, Path):
            self.upload.unlink(missing_ok=True)


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


def job_json(view: JobView, root: str = "") -> dict[str, Any]:
    """A job as JSON; `result` is the picture's URL, under `root` (the app's prefix)."""
    progress = view.progress
    return {
        "id": view.id,
        "kind": view.kind,
        "status": view.status,
        "position": view.position,
        "eta_s": None if view.eta_s is None else round(view.eta_s, 1),
        "progress": None
        if progress is None
        else {"frames_done": progress[0], "frames_total": progress[1]},
        "crop": view.crop,
        "faces": None
        if view.faces is None
        else [list(vars(b).values()) for b in parse_faces(view.faces)],
        "result": None if view.result is None else f"{root}/v1/results/{view.result}",
        "error": None if view.error is None else view.error.to_dict()["error"],
    }


class Uploads(Protocol):
    """Where queued uploads are kept besides this replica (Redis): "not there" on failure."""

    async def put_bytes(self, name: str, value: bytes, *, ttl_s: int) -> bool: ...

    async def get_bytes(self, name: str) -> bytes | None: ...


def upload_name(app: str, job_id: str) -> str:
    """A queued job's upload in Redis (under the tier's prefix)."""
    return f"upload:{app}:{job_id}"


class JobLine(Protocol):
    """The line, as jobs need it."""

    worker: str  # this replica, as the line knows it

    def refuse_if_full(self) -> None:
        """Raise `Overloaded` at once while the line has just said it is full."""

    async def submit(self, job: Submission) -> JobView: ...

    async def record_done(self, job: Submission) -> JobView: ...

    async def take(self, limit: int, running: list[str], held: list[str]) -> Handout: ...

    def finish(
        self, job_id: str, *, key: str | None, error: AnimeGANError | None, computed: bool
    ) -> None: ...


# A job's answer (for a picture within the request deadline).
Run = Callable[[Taken, JobWork], Awaitable[Stylized]]
# A job's work: megapixels of inference (a video's per frame), and its frames (0: a picture).
Weigh = Callable[[JobWork], tuple[float, int]]


class Jobs:
    """One ingress replica's side of the jobs: admission, the uploads it holds, and its share
    of the running."""

    def __init__(
        self,
        line: JobLine,
        tiers: Tiers,
        run: Run,
        *,
        weigh: Weigh,
        uploads: Uploads | None,
        app: str,
        background: Background,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.line = line
        self.tiers = tiers
        self.run = run
        self.weigh = weigh  # refuses what is not an image or a video within the limits
        self.uploads = uploads
        self.app = app
        self.background = background
        self.clock = clock
        self.held: dict[str, tuple[JobWork, float]] = {}  # id -> upload, since when
        self.running: set[str] = set()
        self._checked_at = clock()

    async def submit(
        self,
        key: str,
        image: Upload,
        options: StylizeOptions,
        client: str,
        idempotency: str | None = None,
        *,
        callback_url: str | None = None,
        root: str = "",
        kind: Kind = "image",
    ) -> Admitted:
        """Queue a job for `key`, or record it done if its result is stored; with an
        `idempotency` key the client used before, the job it made then. A spooled upload's
        file is this replica's from here on."""
        job = Submission(
            secrets.token_urlsafe(16),  # 128 random bits: not guessable
            client,
            key,
            holder=self.line.worker,
            idempotency_key=idempotency,
            callback_url=callback_url,
            root=root,
        )
        upload = JobWork(image, options, kind)
        queued = False
        try:
            if self.tiers.hot.get(key) is not None:  # served lately here: before any refusal
                view = await self.line.record_done(job)
            else:
                self.line.refuse_if_full()  # a refusal then costs no actor call
                # A picture's header is read here; a clip's container is opened off the loop.
                work, frames = (
                    self.weigh(upload)
                    if kind == "image"
                    else await asyncio.to_thread(self.weigh, upload)
                )
                if await self.tiers.lookup(key) is not None:
                    view = await self.line.record_done(job)
                else:
                    job = dataclasses.replace(job, work=work, frames=frames)
                    view = await self._queue(job, upload)
                    queued = view.id == job.id
        finally:
            if not queued:
                upload.discard()
        return Admitted(view, replayed=view.id != job.id)

    async def _queue(self, job: Submission, upload: JobWork) -> JobView:
        self.held[job.id] = (upload, self.clock())
        try:
            stored = (
                self.uploads is not None
                and isinstance(upload.upload, bytes)
                and await self.uploads.put_bytes(
                    upload_name(self.app, job.id), upload.encode(), ttl_s=UPLOAD_TTL_S
                )
            )
            job = dataclasses.replace(job, nbytes=size_of(upload.upload), stored=stored)
            view = await self.line.submit(job)
        except BaseException:
            self.held.pop(job.id, None)
            raise
        if view.id != job.id:  # replayed: the earlier job's upload is the one kept
            self.held.pop(job.id, None)
        return view

    async def take_forever(self) -> None:
        """Take jobs whose turn has come, and run each beside the others."""
        while True:
            try:
                handout = await self.line.take(
                    MAX_RUNNING_JOBS - len(self.running), sorted(self.running), self._to_check()
                )
            except Exception as exc:  # never let the taking die: jobs would wait forever
                log.error("taking jobs failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(RETRY_TAKE_S)
                continue
            for job_id in handout.drop:
                dropped = self.held.pop(job_id, None)
                if dropped is not None:
                    dropped[0].discard()
            for job in handout.jobs:
                self.running.add(job.id)  # before the next take says what runs here
                self.background.spawn(self._run(job))

    def _to_check(self) -> list[str]:
        """Every HELD_CHECK_S: the uploads held that long (the line says which to let go)."""
        now = self.clock()
        if now - self._checked_at < HELD_CHECK_S:
            return []
        self._checked_at = now
        return [i for i, (_, since) in self.held.items() if now - since >= HELD_CHECK_S]

    async def _upload(self, job: Taken) -> JobWork | None:
        held = self.held.pop(job.id, None)
        if held is not None:
            return held[0]
        if job.stored and self.uploads is not None:
            stored = await self.uploads.get_bytes(upload_name(self.app, job.id))
            if stored is not None:
                return JobWork.decode(stored)
        return None

    async def _run(self, job: Taken) -> None:
        result: Stylized | None = None
        error: AnimeGANError | None = None
        upload = None
        try:
            upload = await self._upload(job)
            if upload is None:
                error = JobLost(UPLOAD_LOST)
            else:
                result = await self.run(job, upload)
        except AnimeGANError as exc:
            error = exc
        except Exception as exc:
            log.error("job %s failed: %s: %s", job.id, type(exc).__name__, exc)
            error = AnimeGANError("the service failed this job; submit it again")
        finally:
            if upload is not None:
                upload.discard()
        # A clip's frames measured the line's pace themselves, each in its own turn.
        picture = upload is not None and upload.kind == "image"
        computed = result is not None and result.cache == "miss" and picture
        key = job.key if result is not None else None
        self.line.finish(job.id, key=key, error=error, computed=computed)
        self.running.discard(job.id)
