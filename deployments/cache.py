"""The cluster-wide cache: one named Ray actor, and the client the ingress talks to it through.

The actor keeps encoded results in a byte-bounded LRU and coalesces identical requests in
flight: the first miss *claims* the key, later callers wait on the claim, and the claimant
either publishes the result (every waiter gets it, marked "shared") or publishes its error
(every waiter gets that, and nothing is cached). A claim whose owner vanishes expires, so
nobody waits forever. The actor restarts on failure; while it is down the client answers
"unavailable" and the ingress computes without it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

import ray
from ray.util import metrics

from .core.errors import AnimeGANError, Timeout, error_from_code
from .core.result_store import ResultStore

log = logging.getLogger("ray.serve")

CACHE_ACTOR_NAME = "animegan-cache"
CACHE_NAMESPACE = "animegan"
REPORT_FRESH_S = 60.0  # model replicas that reported within this window count in stats

LookupState = Literal["hit", "claimed", "inflight", "unavailable"]


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class CacheActor:
    """Byte-bounded LRU of results plus the claims of requests in flight."""

    def __init__(self, max_bytes: int, ttl_s: float | None, claim_timeout_s: float) -> None:
        self.store = ResultStore(max_bytes, ttl_s=ttl_s)
        self.claim_timeout_s = claim_timeout_s
        self.claims: dict[str, asyncio.Future[tuple[Any, ...]]] = {}
        self.shared = 0
        self.failures = 0
        self.abandoned = 0
        self.replicas: dict[str, tuple[float, dict[str, Any]]] = {}
        self.bytes_gauge = metrics.Gauge("animegan_cache_bytes", "Bytes held by the result cache.")

    async def lookup(self, key: str) -> tuple[LookupState, bytes | None]:
        value = self.store.get(key)
        if value is not None:
            return "hit", value
        if key in self.claims:
            return "inflight", None
        claim = asyncio.get_running_loop().create_future()
        self.claims[key] = claim
        asyncio.get_running_loop().call_later(self.claim_timeout_s, self._expire, key, claim)
        return "claimed", None

    async def wait(self, key: str) -> tuple[Any, ...]:
        """("ok", bytes) once the claim resolves, or ("error", code, message)."""
        claim = self.claims.get(key)
        if claim is None:  # resolved between lookup and wait
            value = self.store.get(key)
            return ("ok", value) if value is not None else ("error", "timeout", "result was lost")
        outcome = await asyncio.shield(claim)
        if outcome[0] == "ok":
            self.shared += 1
        return outcome

    def put(self, key: str, value: bytes) -> None:
        self.store.put(key, value)
        self.bytes_gauge.set(self.store.counters.bytes)
        self._resolve(key, ("ok", value))

    def fail(self, key: str, code: str, message: str) -> None:
        self.failures += 1
        self._resolve(key, ("error", code, message))

    def report(self, replica: str, snapshot: dict[str, Any]) -> None:
        """Model replicas push their counters here so `/v1/stats` sees the whole cluster."""
        self.replicas[replica] = (time.monotonic(), snapshot)

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        fresh = {r: snap for r, (at, snap) in self.replicas.items() if now - at < REPORT_FRESH_S}
        return {
            "cache": {
                **self.store.stats(),
                "shared": self.shared,
                "in_flight": len(self.claims),
                "failures_shared": self.failures,
                "claims_abandoned": self.abandoned,
            },
            "replicas": fresh,
        }

    def _resolve(self, key: str, outcome: tuple[Any, ...]) -> None:
        claim = self.claims.pop(key, None)
        if claim is not None and not claim.done():
            claim.set_result(outcome)

    def _expire(self, key: str, claim: asyncio.Future[tuple[Any, ...]]) -> None:
        if self.claims.get(key) is claim:
            self.abandoned += 1
            self._resolve(key, ("error", "timeout", "the request computing this result vanished"))


class CacheClient:
    """The ingress side: short timeouts, and any cache failure means "go on without it"."""

    def __init__(
        self, *, max_bytes: int, ttl_s: float | None, claim_timeout_s: float, call_timeout_s: float = 2.0
    ) -> None:
        self._init_args = (max_bytes, ttl_s, claim_timeout_s)
        self.actor = self._connect()
        self.call_timeout_s = call_timeout_s
        self.unavailable = 0  # calls that failed or timed out: served without the cache

    def _connect(self) -> ray.actor.ActorHandle:
        """The named actor, created by whichever ingress replica asks first."""
        return CacheActor.options(  # type: ignore[attr-defined]
            name=CACHE_ACTOR_NAME,
            namespace=CACHE_NAMESPACE,
            lifetime="detached",  # outlives any one ingress replica
            get_if_exists=True,
        ).remote(*self._init_args)

    async def lookup(self, key: str) -> tuple[LookupState, bytes | None]:
        try:
            return await self._call(self.actor.lookup.remote(key), self.call_timeout_s)
        except _CacheDown:
            return "unavailable", None

    async def wait(self, key: str, timeout_s: float) -> bytes | None:
        """The shared result; raises the claimant's error; None if the cache failed us."""
        try:
            outcome = await self._call(self.actor.wait.remote(key), timeout_s)
        except _CacheDown:
            return None
        if outcome[0] == "ok":
            return outcome[1]
        if outcome[1] == Timeout.code:
            return None  # the claimant vanished: compute it ourselves
        raise error_from_code(outcome[1], outcome[2])

    async def put(self, key: str, value: bytes) -> None:
        await self._quietly(self.actor.put.remote(key, value))

    async def fail(self, key: str, error: BaseException) -> None:
        if isinstance(error, AnimeGANError):
            code, message = error.code, error.message
        else:
            code, message = "internal", f"{type(error).__name__}: {error}"
        await self._quietly(self.actor.fail.remote(key, code, message))

    async def stats(self) -> dict[str, Any] | None:
        try:
            return await self._call(self.actor.stats.remote(), self.call_timeout_s)
        except _CacheDown:
            return None

    async def _quietly(self, ref: ray.ObjectRef) -> None:
        try:
            await self._call(ref, self.call_timeout_s)
        except _CacheDown:
            pass

    async def _call(self, ref: ray.ObjectRef, timeout_s: float) -> Any:
        try:
            return await asyncio.wait_for(ref, timeout_s)
        except (TimeoutError, ray.exceptions.RayError) as exc:
            if isinstance(exc, ray.exceptions.ActorDiedError):
                self.actor = self._connect()  # dead for good (restarts exhausted): make a new one
            self.unavailable += 1
            log.warning("cache actor unavailable (%s); serving without it", type(exc).__name__)
            raise _CacheDown from exc


class _CacheDown(Exception):
    """Internal: the cache actor did not answer in time or is restarting."""
