"""Stored results plus the claims of results being computed: identical requests computed once.

The first request for a key that is not stored *claims* it and computes it; identical requests
arriving meanwhile find it `Pending` and wait. The claimant then `put`s the result (every waiter
gets it), `fail`s with a refusal about the request (every waiter gets that; nothing is stored),
or `release`s the claim (it gave up or its deadline passed: waiters compute it themselves). A
claim still open after `claim_timeout_s` is released for it, so a claimant that vanished never
strands its waiters. Plain asyncio: the cache actor wraps one of these.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .errors import AnimeGANError
from .result_store import ResultStore
from .results import Picture


@dataclass(frozen=True)
class Hit:
    """The result is stored (or an identical request just computed it)."""

    picture: Picture


@dataclass(frozen=True)
class Claimed:
    """Nobody is computing this key: the caller now holds the claim and must settle it."""


@dataclass(frozen=True)
class Pending:
    """An identical request holds the claim: `wait` for it."""


@dataclass(frozen=True)
class Failed:
    """The claimant was refused; the same refusal applies to every identical request."""

    error: AnimeGANError


@dataclass(frozen=True)
class Released:
    """The claimant gave up or vanished: compute the result yourself."""


Lookup = Hit | Claimed | Pending
Settled = Hit | Failed | Released


class Coalescer:
    """A byte-bounded `ResultStore` and the open claims on keys it does not hold yet."""

    def __init__(self, store: ResultStore[Picture], *, claim_timeout_s: float) -> None:
        self.store = store
        self.claim_timeout_s = claim_timeout_s
        self._claims: dict[str, asyncio.Future[Settled]] = {}
        self.shared = 0  # waiters handed a claimant's result
        self.failures_shared = 0  # claims settled with a refusal
        self.claims_abandoned = 0  # claims released by their timeout

    def get_or_claim(self, key: str) -> Lookup:
        """The stored result, or the claim on `key` (to the first caller), or `Pending`."""
        picture = self.store.get(key)
        if picture is not None:
            return Hit(picture)
        if key in self._claims:
            return Pending()
        loop = asyncio.get_running_loop()
        claim: asyncio.Future[Settled] = loop.create_future()
        self._claims[key] = claim
        loop.call_later(self.claim_timeout_s, self._expire, key, claim)
        return Claimed()

    async def wait(self, key: str) -> Settled:
        """How the claim on `key` was settled (at once if it already was)."""
        claim = self._claims.get(key)
        if claim is None:  # settled between the lookup and this call
            picture = self.store.get(key)
            return Released() if picture is None else Hit(picture)
        settled = await asyncio.shield(claim)  # one waiter's cancellation must not cancel all
        if isinstance(settled, Hit):
            self.shared += 1
        return settled

    def put(self, key: str, picture: Picture) -> None:
        """Store the result and hand it to every waiter."""
        self.store.put(key, picture)
        self._settle(key, Hit(picture))

    def fail(self, key: str, error: AnimeGANError) -> None:
        """Hand the claimant's refusal to every waiter; nothing is stored."""
        self.failures_shared += 1
        self._settle(key, Failed(error))

    def release(self, key: str) -> None:
        """The claimant gives up: waiters compute the result themselves."""
        self._settle(key, Released())

    def stats(self) -> dict[str, Any]:
        return {
            **self.store.stats(),
            "shared": self.shared,
            "in_flight": len(self._claims),
            "failures_shared": self.failures_shared,
            "claims_abandoned": self.claims_abandoned,
        }

    def _settle(self, key: str, settled: Settled) -> None:
        claim = self._claims.pop(key, None)
        if claim is not None and not claim.done():
            claim.set_result(settled)

    def _expire(self, key: str, claim: asyncio.Future[Settled]) -> None:
        if self._claims.get(key) is claim:
            self.claims_abandoned += 1
            self._settle(key, Released())
