"""The service one ingress replica runs, in plain Python: what the HTTP routes and the handle call.

    key -> the tiers (core/tiers.py) -> on a miss: decode here, infer on the model, encode here

Its collaborators arrive as small protocols: the model deployment's client, the cluster cache's,
the line's, Redis. The ingress deployment wires the real ones; nothing here imports Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import numpy as np

from . import clips, face_blend, pipeline
from .background import Background
from .cache_key import cache_key
from .counted import Observe
from .errors import AnimeGANError, Overloaded, Timeout, TooLarge, UnknownResult
from .examples import Example
from .imaging import Cut
from .job_watch import JobWatch
from .jobs import Admitted, JobLine, Jobs, JobWork, Uploads
from .media import Kind, Upload
from .options import ORIGINAL, StylizeOptions
from .replica_stats import Snapshot, summarize
from .result_store import ResultStore
from .results import Picture, StyleStatus, Stylized, faces_header
from .scheduler import JobView, Taken
from .settings import Settings
from .styles import STYLES_WAIT_S, StyleList
from .tiers import ClusterCache, Line, Store, Tiers
from .warming import Warming
from .webhooks import check_callback

EXAMPLES_CLIENT = "examples"  # the start-up warming's place in the line's rotation
RESULT_KEY = re.compile(r"[0-9a-f]{64}")
TURN_ATTEMPTS = 5  # a job's turn of frames that the model failed is tried (elsewhere) this often
PROGRESS_EVERY_S = 0.5  # how often a running video tells the line its frames done

JOB_MEGAPIXELS = 1024 * 1024 / 1e6  # a picture job's work per request_timeout_s of deadline

Turns = Callable[[float, Callable[[], Awaitable[np.ndarray]]], Awaitable[np.ndarray]]


class Model(Protocol):
    """The model deployment, as the service calls it."""

    async def infer(self, pixels: np.ndarray, style: str, solo: bool) -> np.ndarray: ...

    async def infer_frames(self, frames: np.ndarray, style: str) -> np.ndarray: ...

    async def styles(self) -> list[StyleStatus]: ...


class Cache(ClusterCache, Protocol):
    """The cluster cache, with its counters."""

    unavailable: int  # calls that failed: served without it

    async def stats(self) -> dict[str, Any] | None: ...


class Redis(Store, Uploads, Protocol):
    """The Redis tier (results, and queued jobs' uploads), with its counters."""

    def stats(self) -> dict[str, Any]: ...


class ServiceLine(Line, JobLine, Protocol):
    """The line, with the jobs' states and its counters."""

    unavailable: int  # calls that failed

    @property
    def shed_here(self) -> int: ...

    async def view(self, job_id: str) -> JobView: ...

    async def views(self, job_ids: list[str]) -> dict[str, JobView]: ...

    async def cancel(self, job_id: str) -> None: ...

    def detach(self, job_id: str) -> None: ...

    def progress(
        self,
        job_id: str,
        done: int,
        total: int,
        crop: str | None = None,
        faces: str | None = None,
    ) -> None: ...

    async def stats(self) -> dict[str, Any] | None: ...

    async def replica_snapshots(self) -> dict[str, Snapshot]: ...


class StyleService:
    """Stylize requests, jobs, stored results, the style list and the examples of one replica."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: Model,
        cache: Cache,
        redis: Redis | None,
        line: ServiceLine,
        observe: Observe,
        examples: list[Example],
        app: str = "",
    ) -> None:
        self.settings = settings
        self.model = model
        self.cache = cache
        self.redis = redis
        self.line = line
        self.observe = observe  # one answered request, into the metrics
        self.background = Background()
        hot: ResultStore[Picture] = ResultStore(
            settings.local_cache_max_bytes, ttl_s=settings.cache_ttl_s
        )
        self.tiers = Tiers(
            hot=hot, cluster=cache, redis=redis, line=line, background=self.background
        )
        self.style_list = StyleList(model.styles)
        self.jobs = Jobs(
            line,
            self.tiers,
            self._run_job,
            weigh=lambda work: pipeline.weigh(work.upload, work.options, work.kind, settings),
            uploads=redis,
            app=app,
            background=self.background,
        )
        self.watch = JobWatch(line.views, poll_s=0.5)
        self.warming = Warming(
            examples, styles=self.style_list, queued=self._queued, stylize=self._warm_one
        )
        self.active = 0  # requests and jobs this replica is working on

    def start(self) -> None:
        """The background work: the first ask for the styles, taking jobs, warming examples."""
        self.style_list.refresh(self.settings.request_timeout_s)
        self.background.spawn(self.jobs.take_forever())
        if self.warming.examples:
            self.background.spawn(self.warming.run())

    # Stylizing

    async def process(
        self, image: Upload, options: StylizeOptions, client: str, kind: Kind = "image"
    ) -> Stylized:
        """The request path, for HTTP and handle callers alike, within `request_timeout_s`:

        1. key: SHA-256 of the image bytes, the options and the style's weights identity;
        2. this replica's hot cache: `hit`;
        3. the cluster cache (the key's shard): stored (`hit`), or an identical request in
           flight that this one waits for (`shared`), or else this request claims the key;
        4. Redis, when `cache_redis_url` is set: stored there (`hit`);
        5. `miss`: wait in the line for a model slot (fairly between clients; refused at once
           if the wait would be too long), then `compute`; kept in every tier.
        Refusals are `AnimeGANError`s, raised as they are to the caller. An animated
        picture of at most `max_sync_frames` frames walks the same tiers, each of its frames
        taking its own turn in the line; a video is refused (it is a job's).
        """
        async with self._working():
            if kind != "image":
                await asyncio.to_thread(pipeline.check_sync, image, kind, self.settings)
            key = await self.key(image, options)
            if kind == "image":
                assert isinstance(image, bytes)
                return await self._answer(key, image, options, client)
            self.line.refuse_if_busy()
            clip = functools.partial(self.compute_clip, JobWork(image, options, kind), client)
            picture, cache = await self.tiers.answer(key, clip, None)
            return Stylized(picture, key, cache, options)

    async def key(self, upload: Upload, options: StylizeOptions) -> str:
        """The request's cache key; refuses a style (or face style) that is not ready."""
        wait_s = self.settings.request_timeout_s
        identity = ORIGINAL
        if options.style != ORIGINAL:
            identity = await self.style_list.weights_identity(options.style, wait_s=wait_s)
        faces = None
        if options.face_style is not None:
            faces = await self.style_list.weights_identity(options.face_style, wait_s=wait_s)
        if isinstance(upload, bytes):
            return cache_key(upload, options, identity, faces)
        return await asyncio.to_thread(cache_key, upload, options, identity, faces)

    async def compute(self, image: bytes, options: StylizeOptions) -> Picture:
        """Decode (and find the face) here, infer on the model deployment, encode here: bad
        input never reaches a batch."""
        pixels, cut = await asyncio.to_thread(pipeline.decode_upload, image, options, self.settings)
        # Alone in this ingress: no other request can want the model's cores while it runs.
        stylized = await self.model.infer(pixels, options.style, self.active == 1)
        body = await asyncio.to_thread(pipeline.encode_result, stylized, options, self.settings)
        return Picture(body, cut)

    async def compute_clip(self, work: JobWork, client: str, job_id: str | None = None) -> Picture:
        """A clip's frames decoded here, stylized a turn of several at a time in the line as
        `client`'s (a job's turns patiently: they wait however long the line is, and its own
        slot is given back), written back here; a job's progress told to the line."""
        if job_id is not None:
            self.line.detach(job_id)
        source = await asyncio.to_thread(clips.open_source, work.upload, work.kind, self.settings)

        def cut_found(cut: Cut) -> None:  # shown in the job's JSON while it runs
            if job_id is not None:
                self.line.progress(job_id, 0, max(1, source.info.frames), cut.header())

        try:
            rendered = await clips.render(
                source,
                work.options,
                self._frame_stylizer(work.options.style, client, job_id),
                window=self.settings.clip_window,
                turn_megapixels=await self._turn_megapixels(),
                progress=self._progress_reporter(job_id),
                cut_found=cut_found,
            )
        finally:
            await asyncio.to_thread(source.close)
        room = self.settings.cache_max_bytes // self.settings.cache_shards
        if len(rendered.body) > room:  # it could not be kept, so its job could not answer it
            raise TooLarge(
                f"the stylized clip is {len(rendered.body):,} bytes, more than a cache shard "
                f"holds ({room:,}); send a shorter clip or a smaller size"
            )
        return Picture(rendered.body, rendered.cut)

    def _frame_stylizer(self, style: str, client: str, job_id: str | None) -> clips.Stylize:
        take = self._turns(client, job_id)

        async def stylize(frames: list[np.ndarray]) -> list[np.ndarray]:
            work = sum(pixels.shape[0] * pixels.shape[1] for pixels in frames) / 1e6
            return list(await take(work, lambda: self.model.infer_frames(np.stack(frames), style)))

        return stylize

    def _turns(self, client: str, job_id: str | None, *, patient: bool | None = None) -> Turns:
        """Model calls, each in a turn of its own in the line as `client`'s: patiently (they
        wait however long the line is full; a job's by default), or refused when it is full.
        A patient turn has the deadline of as many 1024 px pictures as its work makes."""
        patient = job_id is not None if patient is None else patient
        ticket_key = f"turns:{job_id or secrets.token_hex(8)}"  # no job waits for this key

        async def take(work: float, call: Callable[[], Awaitable[np.ndarray]]) -> np.ndarray:
            timeout_s = self.settings.request_timeout_s
            if patient:
                timeout_s *= max(1.0, work / JOB_MEGAPIXELS)
            failures = 0
            while True:
                turned = False
                try:
                    async with self.line.turn(client, ticket_key, work, patient=patient) as turn:
                        turned = True
                        async with asyncio.timeout(timeout_s):
                            stylized = await call()
                        turn.computed = True
                    return stylized
                except (Overloaded, TimeoutError) as exc:
                    # A model that failed a job's turn (a replica lost twice, the deadline) is
                    # tried TURN_ATTEMPTS times.
                    failures += turned
                    if not patient or failures >= TURN_ATTEMPTS:
                        raise _turn_failure(exc) from None
                    await asyncio.sleep(getattr(exc, "retry_after_s", None) or 1.0)

        return take

    async def compute_faces(
        self, image: bytes, options: StylizeOptions, client: str, job_id: str | None = None
    ) -> Picture:
        """The whole picture in `style` and every face found in `face_style`, each a turn of
        its own in the line as `client`'s, so that replicas draw them side by side; blended
        and encoded here. The turns wait patiently: a request's was admitted already (within
        its deadline), a job gives its own slot back."""
        assert options.face_style is not None
        if job_id is not None:
            self.line.detach(job_id)
        pixels, cut, found = await asyncio.to_thread(
            pipeline.decode_faces, image, options, self.settings
        )
        squares = tuple(face.square for face in found)
        if job_id is not None:  # shown in the job's JSON while it runs
            self.line.progress(job_id, 0, len(found), cut.header(), faces_header(squares))
        take = self._turns(client, job_id, patient=True)

        def draw(pixels: np.ndarray, style: str) -> Awaitable[np.ndarray]:
            work = pixels.shape[0] * pixels.shape[1] / 1e6
            return take(work, lambda: self.model.infer(pixels, style, False))

        keep = options.style == ORIGINAL
        drawn = await _all(
            [draw(face.pixels, options.face_style) for face in found]
            + ([] if keep else [draw(pixels, options.style)])
        )
        whole = pixels if keep else drawn.pop()
        composed = await asyncio.to_thread(
            face_blend.compose, whole, list(zip(squares, drawn, strict=True))
        )
        body = await asyncio.to_thread(pipeline.encode_result, composed, options, self.settings)
        return Picture(body, cut, squares)

    async def _turn_megapixels(self) -> float:
        """The frames' megapixels a model replica stylizes in about `clip_turn_s`, at the
        speed the replicas measured (none reported yet: 0, a frame a turn)."""
        snapshots = await self.line.replica_snapshots()
        speeds = [
            min(curve.values())
            for snapshot in snapshots.values()
            if (curve := snapshot["batch_policy"]["seconds_per_megapixel"])
        ]
        return self.settings.clip_turn_s / statistics.median(speeds) if speeds else 0.0

    def _progress_reporter(self, job_id: str | None) -> clips.Progress:
        """A job's frames done, told to the line at most every PROGRESS_EVERY_S."""
        last = 0.0

        def report(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if job_id is not None and now - last >= PROGRESS_EVERY_S:
                last = now
                self.line.progress(job_id, done, total)

        return report

    async def result(self, key: str) -> Picture:
        """A stored result by its key (`/v1/results/{key}`)."""
        if RESULT_KEY.fullmatch(key) and (picture := await self.tiers.lookup(key)) is not None:
            return picture
        raise UnknownResult(f"no result {key!r}: never computed, or evicted since; submit again")

    async def _answer(
        self, key: str, image: bytes, options: StylizeOptions, client: str | None
    ) -> Stylized:
        if options.face_style is not None and client is not None:  # its turns are its own
            self.line.refuse_if_busy()
            faces = functools.partial(self.compute_faces, image, options, client)
            picture, cache = await self.tiers.answer(key, faces, None)
            return Stylized(picture, key, cache, options)
        compute = functools.partial(self.compute, image, options)
        weigh = functools.partial(pipeline.work_of, image, options, self.settings)
        picture, cache = await self.tiers.answer(key, compute, client, weigh)
        return Stylized(picture, key, cache, options)

    @contextlib.asynccontextmanager
    async def _working(self, deadline_s: float | None = None) -> AsyncIterator[None]:
        """A request or job at work here, within `deadline_s` (the request deadline)."""
        deadline = deadline_s or self.settings.request_timeout_s
        self.active += 1
        try:
            async with asyncio.timeout(deadline):
                yield
        except TimeoutError:
            raise Timeout(f"no result within the {deadline:g} s deadline; retry later") from None
        finally:
            self.active -= 1

    # Jobs: the same work, queued, run by whichever ingress replica the line hands it to

    async def submit_job(
        self,
        image: Upload,
        options: StylizeOptions,
        client: str,
        idempotency_key: str | None = None,
        *,
        callback_url: str | None = None,
        root: str = "",
        kind: Kind = "image",
    ) -> Admitted:
        """Queue a job (done at once if its result is stored; the same job again for an
        Idempotency-Key the client used before); refusals of the input now. `callback_url`
        is called when it ends (checked against `webhook_allowed_hosts`). A spooled upload's
        file is the service's from here on."""
        try:
            if callback_url is not None:
                check_callback(callback_url, self.settings.webhook_allowed_hosts)
            key = await self.key(image, options)
        except BaseException:
            JobWork(image, options, kind).discard()
            raise
        return await self.jobs.submit(
            key,
            image,
            options,
            client,
            idempotency_key,
            callback_url=callback_url,
            root=root,
            kind=kind,
        )

    async def job_view(self, job_id: str) -> JobView:
        return await self.line.view(job_id)

    def follow_job(self, first: JobView) -> AsyncIterator[JobView | None]:
        """`first`, then the job's news until it ends (None: a keep-alive)."""
        return self.watch.follow(first)

    async def cancel_job(self, job_id: str) -> None:
        await self.line.cancel(job_id)

    async def _run_job(self, job: Taken, work: JobWork) -> Stylized:
        compute: Callable[[], Awaitable[Picture]]
        if work.kind != "image":
            compute = functools.partial(self.compute_clip, work, job.client, job.id)
        else:
            assert isinstance(work.upload, bytes)
            if work.options.face_style is None:
                # A large picture's job has the deadline of as many 1024 px pictures as it is.
                megapixels = pipeline.work_of(work.upload, work.options, self.settings)
                deadline_s = self.settings.request_timeout_s * max(1.0, megapixels / JOB_MEGAPIXELS)
                async with self._working(deadline_s):
                    return await self._answer(job.key, work.upload, work.options, None)
            compute = functools.partial(
                self.compute_faces, work.upload, work.options, job.client, job.id
            )
        # A clip or a picture's faces has no overall deadline: each of its turns has one.
        self.active += 1
        try:
            picture, cache = await self.tiers.answer(job.key, compute, None)
        finally:
            self.active -= 1
        return Stylized(picture, job.key, cache, work.options)

    # The style list, the examples, the counters

    async def styles(self, *, wait_s: float = STYLES_WAIT_S) -> list[StyleStatus]:
        """The model's style statuses; [] while it starts."""
        return await self.style_list.get(wait_s=wait_s)

    def gallery(self) -> list[tuple[Example, dict[str, str]]]:
        """Each example, with the result key of each style it is warmed in."""
        return [(example, self.warming.results(example.name)) for example in self.warming.examples]

    def example(self, name: str) -> Example:
        return self.warming.example(name)

    async def stats(self) -> dict[str, Any]:
        """The cluster cache's counters, the line's, this replica's outcomes, the model's."""
        cache, line, replicas = await asyncio.gather(
            self.cache.stats(), self.line.stats(), self.line.replica_snapshots()
        )
        return {
            "cache": cache,
            "line": line,
            "ingress": {
                **self.tiers.outcomes,
                "hot_cache": self.tiers.hot.stats(),
                "cache_unavailable": self.cache.unavailable,
                "redis": None if self.redis is None else self.redis.stats(),
                "line_unavailable": self.line.unavailable,
                "shed_here": self.line.shed_here,
                "jobs_running": len(self.jobs.running),
                "uploads_held": len(self.jobs.held),
            },
            "model": summarize(replicas),
        }

    async def _queued(self) -> int | None:
        line = await self.line.stats()
        return None if line is None else int(line["queued"])

    async def _warm_one(self, data: bytes, style: str) -> Stylized:
        options = StylizeOptions.build(self.settings, style=style)
        return await self.process(data, options, EXAMPLES_CLIENT)


async def _all(calls: list[Awaitable[np.ndarray]]) -> list[np.ndarray]:
    """Every call's result, run side by side; the first failure cancels the others."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # their own failures: told once
        raise


def _turn_failure(exc: Exception) -> AnimeGANError:
    if isinstance(exc, AnimeGANError):
        return exc
    return Timeout("a turn on the model was not done within the request deadline; retry later")
