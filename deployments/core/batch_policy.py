"""How big the next batch may be, from the queue depth and this hardware's measured curve.

On a CPU a bigger batch often costs *more* per image (activations fall out of cache); on a
GPU it costs less. So the policy keeps the measured time per image for each batch size,
normalized per megapixel so different picture sizes share one curve, and caps batches at
the largest size whose per-image time is not worse than the best. Below the cap, the batch
is as big as the queue: a lone request runs at once, never waiting for company.

Two sources feed the curve. Start-up calibration times every size on a quiet replica; real
batches run slower (the ingress, the proxy and other replicas share the CPUs). Comparing a
real batch of 1 with a quiet batch of 8 would favour the 8, so sizes not yet seen in real
traffic are judged by their calibrated time scaled by how much slower real batches run now.
Real estimates drift back toward the best with every batch, so a size judged too slow is
eventually tried again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchDecision:
    max_batch_size: int
    wait_timeout_s: float


class BatchPolicy:
    """Learned batch cap plus queue-depth sizing; plain Python, no Ray."""

    def __init__(
        self,
        *,
        limit: int,
        wait_timeout_s: float,
        adaptive: bool = True,
        tolerance: float = 0.05,
        smoothing: float = 0.2,
        forgiveness: float = 0.01,
    ) -> None:
        self.limit = limit
        self.wait_timeout_s = wait_timeout_s
        self.adaptive = adaptive  # False: fixed batches of `limit`, always waiting (for comparison)
        self.tolerance = tolerance  # "not worse" allows this much noise
        self.smoothing = smoothing  # weight of a new observation in the running average
        self.forgiveness = forgiveness  # share of its gap to the best a slow size regains per batch
        self.calibrated: dict[int, float] = {}  # seconds per megapixel, quiet start-up runs
        self.observed: dict[int, float] = {}  # seconds per megapixel, real batches (averaged)

    def calibrate(self, batch_size: int, seconds: float, megapixels: float) -> None:
        """Record a start-up timing of `batch_size`."""
        self.calibrated[batch_size] = seconds / max(megapixels, 1e-9)

    def observe(self, batch_size: int, seconds: float, megapixels: float) -> None:
        """Fold one real batch's time into the curve."""
        per_image = seconds / max(megapixels, 1e-9)
        previous = self.observed.get(batch_size)
        self.observed[batch_size] = (
            per_image if previous is None else previous + self.smoothing * (per_image - previous)
        )
        best = min(self.observed.values())
        for size, value in self.observed.items():
            if size != batch_size:
                self.observed[size] = value - self.forgiveness * (value - best)

    @property
    def curve(self) -> dict[int, float]:
        """Seconds per megapixel by batch size, real where seen, else calibrated and scaled."""
        common = [n for n in self.observed if n in self.calibrated]
        ratios = sorted(self.observed[n] / self.calibrated[n] for n in common)
        slowdown = ratios[len(ratios) // 2] if ratios else 1.0
        return {**{n: t * slowdown for n, t in self.calibrated.items()}, **self.observed}

    @property
    def cap(self) -> int:
        """The largest batch size whose per-image time is within tolerance of the best."""
        curve = self.curve
        if not curve:
            return 1
        best = min(curve.values())
        good = [n for n, t in curve.items() if t <= best * (1 + self.tolerance)]
        return min(max(good), self.limit)

    def decide(self, queue_depth: int) -> BatchDecision:
        """Batch settings for a replica with `queue_depth` requests waiting or running."""
        if not self.adaptive:
            return BatchDecision(self.limit, self.wait_timeout_s)
        if queue_depth <= 1:
            return BatchDecision(1, 0.0)
        return BatchDecision(min(queue_depth, self.cap), self.wait_timeout_s)

    def snapshot(self) -> dict[str, object]:
        return {
            "cap": self.cap,
            "limit": self.limit,
            "seconds_per_megapixel": {str(n): round(t, 5) for n, t in sorted(self.curve.items())},
        }
