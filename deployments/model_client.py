"""The ingress's side of the model deployment: an inference, a clip's turn, the style list."""

from __future__ import annotations

import logging

import numpy as np
import ray
from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from .core.errors import AnimeGANError, Overloaded
from .core.results import StyleStatus

log = logging.getLogger("ray.serve")

# A replica that dies mid-request (killed, node lost) costs one retry on another; a second loss
# in a row is reported rather than risking a request that itself kills replicas.
MODEL_ATTEMPTS = 2
# Serve's replica gRPC server takes messages up to 4 MiB: larger pixels (over ~830 px square)
# go through Ray's object store.
DIRECT_MAX_BYTES = 2 << 20


class ModelClient:
    """Calls to the `StyleModel` deployment, their failures as the core's typed errors."""

    def __init__(self, model: DeploymentHandle) -> None:
        self.model = model
        # Pixels go straight to the replica over gRPC, not as a Ray task through the object
        # store: measured, ~3 ms less CPU per 256 px miss, in the ingress and the raylet
        # (benchmarks/RESULTS.md, "A lean miss path").
        self.direct = model.options(_by_reference=False)

    async def infer(self, pixels: np.ndarray, style: str, solo: bool) -> np.ndarray:
        """One inference (`solo`: no other request of this ingress wants the model's cores);
        retried once elsewhere if the replica running it dies."""
        return await self._call("infer", pixels, style, solo)

    async def infer_frames(self, frames: np.ndarray, style: str) -> np.ndarray:
        """A clip's turn of frames (N, H, W, 3) in one call, retried as `infer` is."""
        return await self._call("infer_frames", frames, style)

    async def _call(self, method: str, pixels: np.ndarray, *args: object) -> np.ndarray:
        model = self.direct if pixels.nbytes <= DIRECT_MAX_BYTES else self.model
        for attempt in range(MODEL_ATTEMPTS):
            try:
                stylized: np.ndarray = await getattr(model, method).remote(pixels, *args)
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

    async def styles(self) -> list[StyleStatus]:
        statuses: list[StyleStatus] = await self.model.styles.remote()
        return statuses
