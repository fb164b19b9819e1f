"""The ingress deployment: the front door for HTTP (see `http.py`) and for Python handles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import numpy as np
import ray
from ray import serve
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette

from . import telemetry
from .actors import INLINE_OBJECTS
from .cache import CacheClient
from .core import pipeline
from .core.cache_key import cache_key
from .core.coalescer import Claimed, Failed, Hit, Pending
from .core.errors import (
    AnimeGANError,
    Overloaded,
    StyleNotReady,
    Timeout,
    TooLarge,
    UnknownExample,
    UnknownResult,
    UnknownStyle,
)
from .core.examples import Example, load_examples
from .core.job_watch import JobWatch
from .core.options import StylizeOptions
from .core.redis_tier import RedisTier
from .core.replica_stats import summarize
from .core.result_store import ResultStore
from .core.results import CacheOutcome, Picture, StyleStatus, Stylized
from .core.scheduler import JobView
from .core.settings import Settings
from .http import build_http_app
from .scheduler import SchedulerClient, Turn

log = logging.getLogger("ray.serve")

STYLES_FRESH_S = 5.0  # how long the model's style list is trusted
# A replica that dies mid-request (killed, node lost) costs one retry on another; a second loss
# in a row is reported rather than risking a request that itself kills replicas.
MODEL_ATTEMPTS = 2
CALL_TIMEOUT_S = 2.0  # a named actor slower than this is treated as down
HANDLE_CLIENT = "handle"  # Python handle callers share one place in the line's rotation
EXAMPLES_CLIENT = "examples"  # the start-up warming's place in the line's rotation
WARM_POLL_S = 1.0  # how often the warming looks whether the line has emptied
MAX_RUNNING_JOBS = 64  # jobs one ingress replica runs at once (the line's slots bound them all)
RESULT_KEY = re.compile(r"[0-9a-f]{64}")
# Serve's replica gRPC server takes messages up to 4 MiB: larger pixels (over ~830 px square)
# go through Ray's object store.
DIRECT_MAX_BYTES = 2 << 20


@serve.deployment(
    # I/O and hashing; the model replicas own the CPUs.
    ray_actor_options={"num_cpus": 0, "runtime_env": INLINE_OBJECTS},
    # Requests waiting in the line and open job event streams are cheap coroutines here.
    max_ongoing_requests=4096,
    max_queued_requests=512,
    backpressure_config={"retry_after_s": 2},
)
@serve.ingress()
class Ingress:
    """Keys each request, asks the caches, and on a miss runs the model deployment."""

    def __init__(self, model: DeploymentHandle, settings: Settings) -> None:
        self.settings = settings
        self.model = model
        # Pixels go straight to the replica over gRPC, not as a Ray task through the object
        # store: measured, ~3 ms less CPU per 256 px miss, in the ingress and the raylet
        # (benchmarks/RESULTS.md, "A lean miss path").
        self.model_direct = model.options(_by_reference=False)
        self.metrics = {m.name: m.make() for m in telemetry.INGRESS_METRICS}
        self.cache = CacheClient(
            shards=settings.cache_shards,
            max_bytes=settings.cache_max_bytes,
            ttl_s=settings.cache_ttl_s,
            claim_timeout_s=settings.request_timeout_s,
            call_timeout_s=CALL_TIMEOUT_S,
            on_unavailable=lambda: self._unavailable("actor"),
        )
        self.hot: ResultStore[Picture] = ResultStore(
            settings.local_cache_max_bytes, ttl_s=settings.cache_ttl_s
        )
        self.redis = (
            RedisTier(
                settings.cache_redis_url.get_secret_value(),
                prefix=settings.cache_redis_prefix,
                ttl_s=settings.cache_ttl_s,
                timeout_s=settings.cache_redis_timeout_s,
                max_value_bytes=settings.cache_redis_max_value_bytes,
                on_unavailable=lambda: self._unavailable("redis"),
            )
            if settings.cache_redis_url is not None
            else None
        )
        self.scheduler = SchedulerClient(
            settings,
            worker=serve.get_replica_context().replica_id.unique_id,
            call_timeout_s=CALL_TIMEOUT_S,
        )
        self.watch = JobWatch(self.scheduler.views, poll_s=0.5)
        self.outcomes: Counter[str] = Counter()
        self.active = 0  # requests and jobs this replica is working on
        self._styles: list[StyleStatus] = []
        self._styles_at = -STYLES_FRESH_S
        self._styles_refresh: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._jobs_running = 0
        loop = asyncio.get_running_loop()
        self._styles_refresh = loop.create_task(self._refresh_styles(settings.request_timeout_s))
        self._runner = loop.create_task(self._run_jobs())
        self.examples = (
            load_examples(
                settings.examples_dir,
                max_bytes=settings.max_upload_bytes,
                max_pixels=settings.max_pixels,
            )
            if settings.examples_dir is not None
            else []
        )
        self._examples_ready: dict[tuple[str, str], str] = {}  # (example, style) -> result key
        self._warmer = loop.create_task(self._warm_examples()) if self.examples else None

    def __serve_build_asgi_app__(self) -> Starlette:
        return build_http_app(self)

    async def stylize(
        self,
        image: bytes,
        style: str | None = None,
        size: int | None = None,
        crop: str = "none",
        format: str = "png",
        quality: int | None = None,
    ) -> bytes:
        """The Python handle's call: the encoded picture; raises the core's typed errors."""
        start = time.perf_counter()
        try:
            options = self._handle_options(image, style, size, crop, format, quality)
            result = await self.process(image, options, HANDLE_CLIENT)
        except AnimeGANError as exc:
            self.observe("handle", exc.code, exc.http_status, time.perf_counter() - start)
            raise
        self.observe("handle", result.cache, 200, time.perf_counter() - start)
        return result.picture.body

    async def submit(
        self,
        image: bytes,
        style: str | None = None,
        size: int | None = None,
        crop: str = "none",
        format: str = "png",
        quality: int | None = None,
    ) -> str:
        """The Python handle's job: its id, for `job`; raises the core's typed errors."""
        options = self._handle_options(image, style, size, crop, format, quality)
        return (await self.submit_job(image, options, HANDLE_CLIENT)).id

    async def job(self, job_id: str) -> dict[str, Any]:
        """The Python handle's view of a job: the JSON of `GET /v1/jobs/{id}`."""
        return (await self.job_view(job_id)).to_json()

    def _handle_options(
        self,
        image: bytes,
        style: str | None,
        size: int | None,
        crop: str,
        format: str,
        quality: int | None,
    ) -> StylizeOptions:
        limit = self.settings.max_upload_bytes
        if len(image) > limit:  # HTTP uploads are capped while they stream in
            raise TooLarge(f"the upload is {len(image):,} bytes; the limit is {limit:,} bytes")
        return StylizeOptions.build(
            self.settings, style=style, size=size, crop=crop, format=format, quality=quality
        )

    async def process(self, image: bytes, options: StylizeOptions, client: str) -> Stylized:
        """The request path, for HTTP and handle callers alike, within `request_timeout_s`:

        1. key: SHA-256 of the image bytes, the options and the style's weights identity;
        2. this replica's hot cache: `hit`;
        3. the cluster cache (the key's shard): stored (`hit`), or an identical request in
           flight that this one waits for (`shared`), or else this request claims the key;
        4. Redis, when `cache_redis_url` is set: stored there (`hit`);
        5. `miss`: wait in the line for a model slot (fairly between clients; refused at once
           if the wait would be too long), decode (and find the face) here (bad input never
           reaches a batch), infer on the model deployment, encode here; publish to every tier.
        Refusals are `AnimeGANError`s, raised as they are to the caller.
        """
        self.active += 1
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                key = await self.key(image, options)
                return await self._answer(key, image, options, client)
        except TimeoutError:
            raise self._past_deadline() from None
        finally:
            self.active -= 1

    async def key(self, image: bytes, options: StylizeOptions) -> str:
        return cache_key(image, options, await self.weights_identity(options.style))

    async def _answer(
        self, key: str, image: bytes, options: StylizeOptions, client: str | None
    ) -> Stylized:
        """The answer for `key`; `client` is the line's name for the caller, None for a job
        (it already holds a slot)."""
        picture = self.hot.get(key)
        if picture is not None:
            return self._answered(picture, key, "hit", options, counter="hot_hits")
        retry_after_s = self.scheduler.busy.active() if client is not None else None
        if retry_after_s is not None:
            # The line has just refused one: refuse at once. A refusal then costs no call to
            # an actor; hits are still served, from this replica's hot cache (the results it
            # answered lately, which is where a busy service's popular pictures are).
            raise Overloaded(
                "too many requests are waiting for the model; retry later",
                retry_after_s=retry_after_s,
            )
        found = await self.cache.get_or_claim(key)  # None: the cache is down, go on without it
        if isinstance(found, Hit):
            self.hot.put(key, found.picture)
            return self._answered(found.picture, key, "hit", options, counter="hits")
        if isinstance(found, Pending):
            settled = await self.cache.wait(key, timeout_s=self.settings.request_timeout_s)
            if isinstance(settled, Failed):
                raise settled.error
            if isinstance(settled, Hit):
                self.hot.put(key, settled.picture)
                return self._answered(settled.picture, key, "shared", options, counter="shared")
        claimed = isinstance(found, Claimed)  # else: the cache is down, or the claim released
        stored = await self._from_redis(key)
        if stored is not None:
            if claimed:  # it wakes this key's waiters, and the cluster cache has it again
                self._in_background(self.cache.put(key, stored))
            return self._answered(stored, key, "hit", options, counter="redis_hits")
        line = (
            self.scheduler.turn(client, key)
            if client is not None
            else contextlib.nullcontext(Turn())
        )
        try:
            async with line as turn:
                picture = await self.compute(image, options)
                turn.computed = True
        except Overloaded:  # about the service, not the input: waiters try for themselves
            if claimed:
                self._in_background(self.cache.release(key))
            raise
        except AnimeGANError as error:  # a refusal of this input: the same for its waiters
            if claimed:
                self._in_background(self.cache.fail(key, error))
            raise
        except BaseException:  # a fault or cancellation: waiters try for themselves
            if claimed:
                self._in_background(self.cache.release(key))
            raise
        self.hot.put(key, picture)
        # Waiters are woken by the put; this request need not wait for it, nor for Redis.
        self._in_background(self.cache.put(key, picture))
        if self.redis is not None:
            self._in_background(self.redis.put(key, picture))
        return self._answered(picture, key, "miss", options, counter="misses")

    async def _from_redis(self, key: str) -> Picture | None:
        """The result kept in Redis (the third tier), put in this replica's hot cache."""
        stored = await self.redis.get(key) if self.redis is not None else None
        if stored is not None:
            self.hot.put(key, stored)
        return stored

    async def compute(self, image: bytes, options: StylizeOptions) -> Picture:
        """Decode (and find the face) here, infer on the model deployment, encode here."""
        pixels, cut = await asyncio.to_thread(pipeline.decode_upload, image, options, self.settings)
        stylized = await self.infer(pixels, options.style)
        body = await asyncio.to_thread(pipeline.encode_result, stylized, options, self.settings)
        return Picture(body, cut)

    async def infer(self, pixels: np.ndarray, style: str) -> np.ndarray:
        """One inference; retried once elsewhere if the replica running it dies."""
        # Alone in this ingress: no other request can want the model's cores while it runs.
        solo = self.active == 1
        model = self.model_direct if pixels.nbytes <= DIRECT_MAX_BYTES else self.model
        for attempt in range(MODEL_ATTEMPTS):
            try:
                stylized: np.ndarray = await model.infer.remote(pixels, style, solo)
                return stylized
            except BackPressureError:
                raise Overloaded(
                    "the model replicas are at capacity; retry in a few seconds"
                ) from None
            except (ray.exceptions.RayActorError, ReplicaUnavailableError) as exc:
                log.warning(
                    "model replica lost mid-request (attempt %d): %s",
                    attempt + 1,
                    type(exc).__name__,
                )
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, AnimeGANError):
                    raise exc.cause from None  # the refusal itself, not Ray's wrapper
                raise
        raise Overloaded("the model replica running this request failed; retry in a few seconds")

    # Jobs: the same work, queued, run by whichever ingress replica takes it

    async def submit_job(self, image: bytes, options: StylizeOptions, client: str) -> JobView:
        """Queue a job (done at once if its result is stored); refusals of the input now."""
        key = await self.key(image, options)
        job_id = secrets.token_urlsafe(16)  # 128 random bits: not guessable
        if self.hot.get(key) is not None:
            return await self.scheduler.record_done(job_id, client, key)
        retry_after_s = self.scheduler.full.active()
        if retry_after_s is not None:  # the line has just said it is full: as for _answer
            raise Overloaded("the queue is full; retry later", retry_after_s=retry_after_s)
        pipeline.check_upload(image, self.settings)  # a header parse: no thread needed
        if await self.cache.get(key) is not None:
            return await self.scheduler.record_done(job_id, client, key)
        stored = await self._from_redis(key)
        if stored is not None:  # /v1/results asks the cluster cache first: put it there
            await self.cache.put(key, stored)
            return await self.scheduler.record_done(job_id, client, key)
        return await self.scheduler.submit(job_id, client, key, (key, image, options))

    async def job_view(self, job_id: str) -> JobView:
        return await self.scheduler.view(job_id)

    def follow_job(self, first: JobView) -> AsyncIterator[JobView | None]:
        """`first`, then the job's news until it ends (None: a keep-alive)."""
        return self.watch.follow(first)

    async def cancel_job(self, job_id: str) -> None:
        await self.scheduler.cancel(job_id)

    async def result(self, key: str) -> Picture:
        """A stored result by its key (`/v1/results/{key}`)."""
        if RESULT_KEY.fullmatch(key):
            picture = self.hot.get(key)
            if picture is None:
                picture = await self.cache.get(key)
            if picture is None:
                picture = await self._from_redis(key)
            if picture is not None:
                return picture
        raise UnknownResult(f"no result {key!r}: never computed, or evicted since; submit again")

    async def _run_jobs(self) -> None:
        """This replica's share of the line: take jobs whose turn has come, and run them."""
        while True:
            try:
                taken = await self.scheduler.take(MAX_RUNNING_JOBS - self._jobs_running)
            except Exception as exc:  # never let the runner die: jobs would wait forever
                log.error("taking jobs failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(1.0)
                continue
            for job_id, (key, image, options) in taken:
                self._in_background(self._run_job(job_id, key, image, options))

    async def _run_job(self, job_id: str, key: str, image: bytes, options: StylizeOptions) -> None:
        self.active += 1
        self._jobs_running += 1
        result: Stylized | None = None
        error: AnimeGANError | None = None
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                result = await self._answer(key, image, options, None)
        except TimeoutError:
            error = self._past_deadline()
        except AnimeGANError as exc:
            error = exc
        except Exception as exc:
            log.error("job %s failed: %s: %s", job_id, type(exc).__name__, exc)
            error = AnimeGANError("the service failed this job; submit it again")
        finally:
            self.active -= 1
            self._jobs_running -= 1
        computed = result is not None and result.cache == "miss"
        self.scheduler.finish(job_id, key=key if result else None, error=error, computed=computed)

    def observe(self, route: str, outcome: str, status: int, seconds: float) -> None:
        """One answered request, in the metrics: `outcome` is the cache's or the error code."""
        self.metrics[telemetry.REQUESTS.name].inc(
            tags={"route": route, "outcome": outcome, "status": str(status)}
        )
        self.metrics[telemetry.REQUEST_SECONDS.name].observe(
            seconds, tags={"route": route, "outcome": outcome}
        )

    def _unavailable(self, tier: str) -> None:
        self.metrics[telemetry.CACHE_UNAVAILABLE.name].inc(tags={"tier": tier})

    def _past_deadline(self) -> Timeout:
        deadline = self.settings.request_timeout_s
        return Timeout(f"no result within the {deadline:g} s deadline; retry later")

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._background.discard)

    def _answered(
        self,
        picture: Picture,
        key: str,
        cache: CacheOutcome,
        options: StylizeOptions,
        *,
        counter: str,
    ) -> Stylized:
        self.outcomes[counter] += 1
        return Stylized(picture, key, cache, options)

    async def styles(self, *, wait_s: float = 5.0) -> list[StyleStatus]:
        """The model's style statuses; [] while it starts.

        Asked once at start-up and then refreshed in the background when stale, rather than on
        the request path: asking the model deployment queues behind inference, so a first
        request that had to ask would wait for a whole batch.
        """
        refreshing = self._styles_refresh is not None and not self._styles_refresh.done()
        if not refreshing and time.monotonic() - self._styles_at > STYLES_FRESH_S:
            self._styles_refresh = asyncio.create_task(self._refresh_styles(wait_s))
        if not self._styles and self._styles_refresh is not None:
            with contextlib.suppress(TimeoutError):  # one ask at a time, however many wait
                await asyncio.wait_for(asyncio.shield(self._styles_refresh), wait_s)
        return self._styles

    async def _refresh_styles(self, wait_s: float) -> None:
        try:
            self._styles = await asyncio.wait_for(self.model.styles.remote(), wait_s)
            self._styles_at = time.monotonic()
        except (TimeoutError, BackPressureError, ray.exceptions.RayError) as exc:
            log.warning("model deployment did not list its styles: %s", type(exc).__name__)

    async def weights_identity(self, style: str) -> str:
        """The git blob SHA-1 of `style`'s weights; raises if the style cannot serve."""
        for status in await self.styles(wait_s=self.settings.request_timeout_s):
            if status.name == style:
                if not status.ready or status.sha1 is None:
                    raise StyleNotReady(f"style {style!r} is not ready: {status.error}")
                return status.sha1
        if self._styles:
            raise UnknownStyle(f"unknown style {style!r}")
        raise Overloaded("the model deployment is still starting; retry in a few seconds")

    # Examples: warmed at start-up, listed for the page

    async def _warm_examples(self) -> None:
        """Every example in every ready style, one at a time, and only while nobody waits for
        the model: warming never crowds out real requests."""
        while True:  # the model deployment may still be starting
            styles = await self.styles()
            if styles:
                break
            await asyncio.sleep(WARM_POLL_S)
        for example in self.examples:
            for style in (s.name for s in styles if s.ready):
                await self._warm_example(example, style)
        log.info("%d examples warmed", len(self.examples))

    async def _warm_example(self, example: Example, style: str) -> None:
        """One example in one style, sent once the line is empty (again if it filled meanwhile)."""
        options = StylizeOptions.build(self.settings, style=style)
        while True:
            line = await self.scheduler.stats()
            if line is not None and line["queued"] == 0:
                try:
                    result = await self.process(example.data, options, EXAMPLES_CLIENT)
                except Overloaded:
                    pass  # the line filled meanwhile: later
                except AnimeGANError as exc:
                    log.warning("example %s (%s): %s", example.name, style, exc.message)
                    return
                else:
                    self._examples_ready[(example.name, style)] = result.key
                    return
            await asyncio.sleep(WARM_POLL_S)

    def examples_view(self, root: str = "") -> list[dict[str, Any]]:
        """`GET /v1/examples`: each example's original, and its result in each style warmed."""
        return [
            {
                "name": example.name,
                "original": f"{root}/v1/examples/{example.name}",
                "results": {
                    style: f"{root}/v1/results/{key}"
                    for (name, style), key in self._examples_ready.items()
                    if name == example.name
                },
            }
            for example in self.examples
        ]

    def example(self, name: str) -> Example:
        """One example picture, for `GET /v1/examples/{name}`."""
        for example in self.examples:
            if example.name == name:
                return example
        raise UnknownExample(f"no example {name[:100]!r}; GET /v1/examples lists them")

    async def stats(self) -> dict[str, Any]:
        """The cluster cache's counters, the line's, this replica's outcomes, the model's."""
        cache, line, replicas = await asyncio.gather(
            self.cache.stats(), self.scheduler.stats(), self.scheduler.replica_snapshots()
        )
        return {
            "cache": cache,
            "line": line,
            "ingress": {
                **self.outcomes,
                "hot_cache": self.hot.stats(),
                "cache_unavailable": self.cache.unavailable,
                "redis": None if self.redis is None else self.redis.stats(),
                "line_unavailable": self.scheduler.unavailable,
                "shed_here": self.scheduler.busy.refused + self.scheduler.full.refused,
                "jobs_running": self._jobs_running,
            },
            "model": summarize(replicas),
        }
