"""Every metric the service exports, in one table: README "Operating it" lists the same rows
(a test keeps them equal), and ops/ (alerts, dashboard) uses only these and Ray Serve's own.

Ray exports them on each node's metrics port with `ray_` before the name and `_total` after a
counter's. Label values are bounded: routes, outcomes (a cache outcome or an error code), HTTP
statuses, styles, tiers; never a key, a path or a client address.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ray.serve import metrics as serve_metrics
from ray.util import metrics as util_metrics

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class Metric:
    name: str  # as recorded; exported as ray_<name> (+ _total for a counter)
    kind: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...]
    meaning: str
    boundaries: tuple[float, ...] = ()

    @property
    def exported(self) -> str:
        return f"ray_{self.name}" + ("_total" if self.kind == "counter" else "")

    def make(self, *, replica: bool = True) -> Any:
        """The Ray metric, in the process that records it: in a Serve replica, Serve's kind,
        which adds the application, deployment and replica labels."""
        kinds = serve_metrics if replica else util_metrics
        if self.kind == "counter":
            return kinds.Counter(self.name, self.meaning, tag_keys=self.labels)
        if self.kind == "gauge":
            return kinds.Gauge(self.name, self.meaning, tag_keys=self.labels)
        return kinds.Histogram(
            self.name, self.meaning, boundaries=list(self.boundaries), tag_keys=self.labels
        )


REQUESTS = Metric(
    "animegan_requests",
    "counter",
    ("route", "outcome", "status"),
    "Requests answered, by route (stylize, jobs, transform, results; handle and handle_jobs "
    "for the Python handle's stylize and submit), outcome (hit, miss, shared, queued, or the "
    "error code) and HTTP status",
)
REQUEST_SECONDS = Metric(
    "animegan_request_seconds",
    "histogram",
    ("route", "outcome"),
    "Time from the request's arrival in the ingress to its answer",
    SECONDS,
)
BATCH_SIZE = Metric(
    "animegan_batch_size", "histogram", (), "Images per engine run", (1, 2, 4, 8, 16, 32)
)
INFERENCE_SECONDS = Metric(
    "animegan_inference_seconds", "histogram", (), "Engine time per batch", SECONDS
)
INFERENCE_SECONDS_PER_MEGAPIXEL = Metric(
    "animegan_inference_seconds_per_megapixel",
    "histogram",
    (),
    "Engine time per batch divided by its megapixels",
    (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0),
)
QUEUE_DEPTH = Metric(
    "animegan_queue_depth", "gauge", (), "Requests waiting or running in one model replica"
)
SLOTS = Metric(
    "animegan_slots", "gauge", (), "Requests one model replica takes at once (its queue's limit)"
)
STYLE_READY = Metric(
    "animegan_style_ready", "gauge", ("style",), "1 while a model replica serves the style, else 0"
)
CACHE_ENTRIES = Metric("animegan_cache_entries", "gauge", (), "Results held by a cache shard")
CACHE_BYTES = Metric("animegan_cache_bytes", "gauge", (), "Bytes held by a cache shard")
CACHE_LOOKUPS = Metric(
    "animegan_cache_lookups",
    "counter",
    ("result",),
    "Cluster cache lookups, by result (hit or miss)",
)
CACHE_EVICTIONS = Metric(
    "animegan_cache_evictions", "counter", (), "Results the cluster cache dropped for room"
)
CACHE_UNAVAILABLE = Metric(
    "animegan_cache_unavailable",
    "counter",
    ("tier",),
    "Cache calls that failed or were skipped, by tier (actor or redis): served without it",
)

WEBHOOKS = Metric(
    "animegan_webhooks",
    "counter",
    ("outcome",),
    "Webhook calls by outcome: delivered, retried, failed (given up), refused (forbidden host)",
)

INGRESS_METRICS = (REQUESTS, REQUEST_SECONDS, CACHE_UNAVAILABLE)
LINE_METRICS = (WEBHOOKS,)
MODEL_METRICS = (
    BATCH_SIZE,
    INFERENCE_SECONDS,
    INFERENCE_SECONDS_PER_MEGAPIXEL,
    QUEUE_DEPTH,
    SLOTS,
    STYLE_READY,
)
CACHE_METRICS = (CACHE_ENTRIES, CACHE_BYTES, CACHE_LOOKUPS, CACHE_EVICTIONS)
ALL = INGRESS_METRICS + MODEL_METRICS + CACHE_METRICS + LINE_METRICS


def table() -> str:
    """The README's metric table."""
    rows = [
        "| metric | type | labels | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for m in ALL:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "-"
        rows.append(f"| `{m.exported}` | {m.kind} | {labels} | {m.meaning} |")
    return "\n".join(rows)


class IngressMetrics:
    """An ingress replica's metrics: answers by route and outcome, and tiers it went without."""

    def __init__(self) -> None:
        self._metrics = {m.name: m.make() for m in INGRESS_METRICS}

    def observe(self, route: str, outcome: str, status: int, seconds: float) -> None:
        """One answered request: `outcome` is the cache's, `queued`, `ok` or the error code."""
        self._metrics[REQUESTS.name].inc(
            tags={"route": route, "outcome": outcome, "status": str(status)}
        )
        self._metrics[REQUEST_SECONDS.name].observe(
            seconds, tags={"route": route, "outcome": outcome}
        )

    def unavailable(self, tier: str) -> None:
        self._metrics[CACHE_UNAVAILABLE.name].inc(tags={"tier": tier})
