"""The ingress deployment: key the request, ask the caches, and on a miss run the model.

Request path, in order: validate options -> check the byte limit -> cache key (image bytes +
options + the style's weights identity) -> this replica's hot cache -> the cluster cache
actor (hit, or wait for an identical request in flight, or claim the key) -> decode ->
model deployment -> encode -> publish to both caches. HTTP parsing lives in `http.py`;
Python callers use `stylize` through `serve.get_app_handle("animegan")`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import ray
from ray import serve
from ray.serve import metrics
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from .cache import CacheClient
from .core import imaging, pipeline
from .core.cache_key import cache_key
from .core.errors import AnimeGANError, Overloaded, StyleNotReady, Timeout, UnknownStyle
from .core.options import StylizeOptions
from .core.result_store import ResultStore
from .core.settings import Settings
from .http import build_http_app

log = logging.getLogger("ray.serve")

CacheState = Literal["hit", "miss", "shared"]
STYLES_FRESH_S = 5.0  # how long the model's style list is trusted
# A replica that dies mid-request (killed, node lost) costs one retry on another; a second loss
# in a row is reported rather than risking a request that itself kills replicas.
MODEL_ATTEMPTS = 2


@dataclass(frozen=True)
class StylizeResult:
    body: bytes
    key: str
    cache: CacheState
    options: StylizeOptions


@serve.deployment(
    ray_actor_options={"num_cpus": 0},  # I/O and hashing; the model replicas own the CPUs
    max_ongoing_requests=256,
    max_queued_requests=512,
    backpressure_config={"retry_after_s": 2},
)
@serve.ingress()
class Ingress:
    """The front door for HTTP and for Python handles."""

    def __init__(self, model: DeploymentHandle, settings_args: dict[str, Any] | None = None) -> None:
        self.settings = Settings.from_args(settings_args)
        self.model = model
        self.cache = CacheClient(
            max_bytes=self.settings.cache_max_bytes,
            ttl_s=self.settings.cache_ttl_s,
            claim_timeout_s=self.settings.request_timeout_s,
        )
        self.hot = ResultStore(self.settings.local_cache_max_bytes, ttl_s=self.settings.cache_ttl_s)
        self.outcomes: Counter[str] = Counter()
        self.active = 0  # requests this replica is working on
        self._styles: list[dict[str, Any]] = []
        self._styles_at = -STYLES_FRESH_S
        self._styles_refresh: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._requests_metric = metrics.Counter(
            "animegan_requests", "Stylize requests by cache outcome.", tag_keys=("cache",)
        )
        self._latency_metric = metrics.Histogram(
            "animegan_request_ms", "Stylize latency in the ingress.",
            boundaries=[1, 5, 10, 50, 100, 250, 500, 1000, 5000],
        )

    def __serve_build_asgi_app__(self) -> Any:
        return build_http_app(self)

    # -- Python handle API -----------------------------------------------------------------

    async def stylize(
        self,
        image: bytes,
        style: str | None = None,
        size: int | None = None,
        crop: str = "none",
        format: str = "png",
        quality: int | None = None,
    ) -> bytes:
        """The encoded stylized image; raises the core's typed errors for bad input."""
        options = StylizeOptions.build(
            self.settings, style=style, size=size, crop=crop, format=format, quality=quality
        )
        return (await self.process(image, options)).body

    # -- the request path ---------------------------------------------------------------------

    async def process(self, image: bytes, options: StylizeOptions) -> StylizeResult:
        start = time.perf_counter()
        self.active += 1
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                result = await self._process(image, options)
        except TimeoutError:
            raise Timeout(
                f"no result within the {self.settings.request_timeout_s:g} s deadline; retry later"
            ) from None
        finally:
            self.active -= 1
        self._requests_metric.inc(tags={"cache": result.cache})
        self._latency_metric.observe((time.perf_counter() - start) * 1e3)
        return result

    async def _process(self, image: bytes, options: StylizeOptions) -> StylizeResult:
        imaging.check_size(image, max_bytes=self.settings.max_upload_bytes)
        key = cache_key(image, options, await self.weights_identity(options.style))

        body = self.hot.get(key)
        if body is not None:
            return self._done(body, key, "hit", options, "hot_hits")
        state, body = await self.cache.lookup(key)
        if state == "hit":
            self.hot.put(key, body)
            return self._done(body, key, "hit", options, "hits")
        if state == "inflight":
            body = await self.cache.wait(key, timeout_s=self.settings.request_timeout_s)
            if body is not None:
                self.hot.put(key, body)
                return self._done(body, key, "shared", options, "shared")
        try:
            body = await self.compute(image, options)
        except BaseException as exc:  # cancellation too: waiters must not wait for nothing
            if state == "claimed":
                self._in_background(self.cache.fail(key, exc))
            raise
        self.hot.put(key, body)
        self._in_background(self.cache.put(key, body))  # waiters are woken by it; we need not wait
        return self._done(body, key, "miss", options, "misses")

    async def compute(self, image: bytes, options: StylizeOptions) -> bytes:
        """Decode here (bad input never reaches a batch), stylize there, encode here."""
        pixels = await asyncio.to_thread(pipeline.prepare, image, options, self.settings)
        stylized = await self._run_model(pixels, options.style)
        return await asyncio.to_thread(pipeline.finish, stylized, options, self.settings)

    async def _run_model(self, pixels: np.ndarray, style: str) -> np.ndarray:
        """One inference; retried once elsewhere if the replica running it dies."""
        # Alone in this ingress: no other request can want the model's cores while it runs.
        solo = self.active == 1
        for attempt in range(MODEL_ATTEMPTS):
            try:
                return await self.model.stylize.remote(pixels, style, solo)
            except BackPressureError:
                raise Overloaded("the model replicas are at capacity; retry in a few seconds") from None
            except (ray.exceptions.RayActorError, ReplicaUnavailableError) as exc:
                log.warning("model replica lost mid-request (attempt %d): %s", attempt + 1,
                            type(exc).__name__)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, AnimeGANError):
                    raise exc.cause from None
                raise
        raise Overloaded("the model replica running this request failed; retry in a few seconds")

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._background.discard)

    def _done(
        self, body: bytes, key: str, cache: CacheState, options: StylizeOptions, counter: str
    ) -> StylizeResult:
        self.outcomes[counter] += 1
        return StylizeResult(body, key, cache, options)

    # -- styles, health, stats -------------------------------------------------------------------

    async def styles(self, *, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """The model's style statuses; [] while it starts.

        Once known, a stale list is refreshed in the background rather than on the request
        path: asking the model deployment queues behind inference.
        """
        stale = time.monotonic() - self._styles_at > STYLES_FRESH_S
        if not self._styles:
            await self._refresh_styles(wait_s)
        elif stale and (self._styles_refresh is None or self._styles_refresh.done()):
            self._styles_refresh = asyncio.create_task(self._refresh_styles(wait_s))
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
            if status["name"] == style:
                if not status["ready"]:
                    raise StyleNotReady(f"style {style!r} is not ready: {status['error']}")
                return status["sha1"]
        if self._styles:
            raise UnknownStyle(f"unknown style {style!r}")
        raise Overloaded("the model deployment is still starting; retry in a few seconds")

    async def stats(self) -> dict[str, Any]:
        shared = await self.cache.stats() or {"cache": None, "replicas": {}}
        replicas = shared["replicas"]
        histogram: Counter[str] = Counter()
        for snapshot in replicas.values():
            histogram.update(snapshot["batch_sizes"])
        return {
            "cache": shared["cache"],
            "ingress": {
                **self.outcomes,
                "hot_cache": self.hot.stats(),
                "cache_unavailable": self.cache.unavailable,
            },
            "model": {
                "replicas": len(replicas),
                "inferences": sum(s["inferences"] for s in replicas.values()),
                "batches": sum(s["batches"] for s in replicas.values()),
                "batch_sizes": dict(sorted(histogram.items(), key=lambda kv: int(kv[0]))),
                "batch_caps": [s["batch_policy"]["cap"] for s in replicas.values()],
                "queue_depths": [s["queue_depth"] for s in replicas.values()],
                "per_replica": replicas,
            },
        }
