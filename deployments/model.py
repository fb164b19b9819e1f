"""The model deployment: every style loaded per replica, requests batched by `@serve.batch`.

The batch size is re-decided as requests arrive and leave, from this replica's own queue
depth (waiting + running) and the batch policy's learned cap; a lone request runs at once.
Inference runs inline on the replica's event loop: that is what lets the next batch gather
while this one computes (with the engine in a thread, batches stay small).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import serve

from . import telemetry
from .core.batch_policy import BatchPolicy
from .core.engine import Engine
from .core.results import StyleStatus
from .core.settings import Settings
from .scheduler import scheduler_actor

log = logging.getLogger("ray.serve")

CURVE_SIDE = 256  # pictures the start-up batch curve is measured on
CURVE_SIZES = (1, 2, 4, 8, 16, 32)
REPORT_EVERY_S = 1.0


@dataclass(frozen=True)
class Inference:
    """One decoded picture waiting for its batch."""

    pixels: np.ndarray  # (H, W, 3) uint8
    style: str
    solo: bool  # the only request its ingress is working on: it may borrow the idle cores


@serve.deployment(
    ray_actor_options={"num_cpus": 1},  # and as many torch threads as CPUs (see __init__)
    # Small on CPUs, where batches above 1-2 cost more per image: requests wait at the router,
    # and whichever replica frees first takes the next. Raise it on GPUs.
    max_ongoing_requests=4,
    # Beyond this the ingress sheds requests at once (503 + Retry-After): a longer queue only
    # adds latency under overload, not throughput.
    max_queued_requests=16,
    health_check_period_s=10,
    health_check_timeout_s=60,  # a replica busy with a large batch is not dead
)
class StyleModel:
    """Holds the engine; `infer` (a picture) and `infer_frames` (a clip's turn) are its
    request methods."""

    def __init__(self, settings: Settings) -> None:
        if settings.threads is None:  # as many torch threads as CPUs Ray gave this replica
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
            settings = settings.model_copy(update={"threads": max(1, int(cpus))})
        self.engine = Engine.load(settings)
        self.solo_threads = settings.solo_threads
        self.policy = BatchPolicy(
            limit=settings.max_batch_size,
            wait_timeout_s=settings.batch_wait_timeout_s,
            adaptive=settings.adaptive_batching,
        )
        if settings.adaptive_batching:
            sizes = [n for n in CURVE_SIZES if n <= self.policy.limit]
            megapixels = CURVE_SIDE * CURVE_SIDE / 1e6
            for size, per_image in self.engine.time_batches(sizes, side=CURVE_SIDE).items():
                self.policy.calibrate(size, per_image * size, megapixels * size)
        log.info("batch curve %s", self.policy.snapshot())
        self.queue_depth = 0
        self.calls = 0  # requests: a picture each, or a clip's turn of frames
        self.inferences = 0
        self.batch_sizes: Counter[int] = Counter()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.node = ray.get_runtime_context().get_node_id()
        self.scheduler = scheduler_actor(settings)
        self.max_ongoing = serve.get_replica_context()._deployment_config.max_ongoing_requests
        self._reported_at = 0.0
        self._reported_slots = 0
        self._trailing: asyncio.TimerHandle | None = None
        self.metrics = {m.name: m.make() for m in telemetry.MODEL_METRICS}
        self._publish_state()
        self._apply_policy()
        self._report(force=True)  # the line counts this replica's slots before it serves

    async def infer(self, pixels: np.ndarray, style: str, solo: bool = False) -> np.ndarray:
        """One decoded picture in, its stylized pixels out (batched with its neighbours).

        `solo`: the caller has no other request in progress, so the other replicas' cores idle.
        """
        self.calls += 1
        return await self._infer(pixels, style, solo)

    async def infer_frames(self, frames: np.ndarray, style: str) -> np.ndarray:
        """A turn of a clip's frames (N, H, W, 3) in one call, without N calls' cost. They
        join the batches a batch's worth at a time (the learned cap), so a picture that comes
        in meanwhile waits behind one batch of them, not behind the whole turn."""
        self.calls += 1
        results: list[np.ndarray] = []
        while len(results) < len(frames):
            batch = frames[len(results) : len(results) + self.policy.cap]
            results += await asyncio.gather(*(self._infer(frame, style) for frame in batch))
        return np.stack(results)

    async def _infer(self, pixels: np.ndarray, style: str, solo: bool = False) -> np.ndarray:
        self.queue_depth += 1
        self._apply_policy()
        try:
            inference = Inference(pixels, style, solo=solo and self.queue_depth == 1)
            result = await self._infer_batch(inference)
        finally:
            self.queue_depth -= 1
            self._apply_policy()
            self._report(force=self.slots != self._reported_slots)
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _infer_batch(self, batch: list[Inference]) -> list[np.ndarray | Exception]:
        """Split into same-style, same-shape groups; one group's error stays in that group."""
        groups: dict[tuple[str, tuple[int, ...]], list[int]] = defaultdict(list)
        for index, inference in enumerate(batch):
            groups[(inference.style, inference.pixels.shape)].append(index)
        results: list[np.ndarray | Exception] = [np.empty(0)] * len(batch)
        alone = len(batch) == 1 and batch[0].solo
        threads = self.solo_threads if alone else None
        for (style, shape), indices in groups.items():
            start = time.perf_counter()
            try:
                outputs: list[np.ndarray | Exception] = list(
                    self.engine.run(style, [batch[i].pixels for i in indices], threads=threads)
                )
            except Exception as exc:  # handed back to each caller of the group
                outputs = [exc] * len(indices)
            else:
                self._record(len(indices), time.perf_counter() - start, shape, solo=alone)
            for index, output in zip(indices, outputs, strict=True):
                results[index] = output
        return results

    def check_health(self) -> None:
        """Serve's periodic health check; it doubles as the report that keeps our slots counted
        and our state in the metrics."""
        self._report(force=True)
        self._publish_state()

    @property
    def slots(self) -> int:
        """What the line may hand this replica at once: the batch it runs and the next one,
        ready when it ends. No more: what waits in a replica runs in the order it came, so
        work the line hands out early is work its fairness no longer orders."""
        return min(self.max_ongoing, 2 * self.policy.cap)

    def _publish_state(self) -> None:
        """Gauges that change rarely, set again every health check: Ray stops exporting a
        gauge not set for about half a minute (measured: gone between 5 and 40 s)."""
        self.metrics[telemetry.SLOTS.name].set(self.slots)
        for name, status in self.engine.statuses.items():
            self.metrics[telemetry.STYLE_READY.name].set(int(status.ready), tags={"style": name})
        self.metrics[telemetry.QUEUE_DEPTH.name].set(self.queue_depth)

    def styles(self) -> list[StyleStatus]:
        """Status of every configured style in this replica."""
        return list(self.engine.statuses.values())

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "slots": self.slots,
            "calls": self.calls,
            "inferences": self.inferences,
            "batches": sum(self.batch_sizes.values()),
            "batch_sizes": {str(n): c for n, c in sorted(self.batch_sizes.items())},
            "queue_depth": self.queue_depth,
            "precision": self.engine.precision,
            "batch_policy": self.policy.snapshot(),
        }

    def _apply_policy(self) -> None:
        decision = self.policy.decide(self.queue_depth)
        self._infer_batch.set_max_batch_size(decision.max_batch_size)  # type: ignore[attr-defined]
        self._infer_batch.set_batch_wait_timeout_s(decision.wait_timeout_s)  # type: ignore[attr-defined]
        self.metrics[telemetry.QUEUE_DEPTH.name].set(self.queue_depth)

    def _record(self, size: int, seconds: float, shape: tuple[int, ...], *, solo: bool) -> None:
        self.inferences += size
        self.batch_sizes[size] += 1
        megapixels = size * shape[0] * shape[1] / 1e6
        if not solo:  # borrowed cores would flatter batch size 1 in the learned curve
            self.policy.observe(size, seconds, megapixels=megapixels)
        self.metrics[telemetry.BATCH_SIZE.name].observe(size)
        self.metrics[telemetry.INFERENCE_SECONDS.name].observe(seconds)
        self.metrics[telemetry.INFERENCE_SECONDS_PER_MEGAPIXEL.name].observe(seconds / megapixels)

    def _report(self, *, force: bool) -> None:
        """Post counters, fire and forget: at most every REPORT_EVERY_S, the last of a busy
        spell at the end of that wait (so the counters catch up), `force`d at once."""
        now = time.monotonic()
        wait_s = self._reported_at + REPORT_EVERY_S - now
        if not force and wait_s > 0:
            if self._trailing is None:  # measured: a report per miss, when every miss forced one
                loop = asyncio.get_running_loop()
                self._trailing = loop.call_later(wait_s, self._report_trailing)
            return
        if self._trailing is not None:
            self._trailing.cancel()
            self._trailing = None
        self._reported_at = now
        self._reported_slots = self.slots
        self.scheduler.report.remote(self.replica, self.stats())

    def _report_trailing(self) -> None:
        self._trailing = None
        self._report(force=True)
