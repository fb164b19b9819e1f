"""A closed-loop HTTP load generator: N clients, each sending its next request when the last ends.

Bounded by a request count and a time limit, whichever comes first; only loopback targets.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

# The i-th request's (body, query parameters).
Payloads = Callable[[int], tuple[bytes, dict[str, object]]]


@dataclass
class LoadResult:
    clients: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)

    @property
    def throughput(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        if len(self.latencies_ms) == 1:
            return self.latencies_ms[0]
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


async def _client(
    http: httpx.AsyncClient, path: str, payloads: Payloads, counter: list[int],
    max_requests: int, deadline: float, result: LoadResult,
) -> None:
    while time.monotonic() < deadline:
        index = counter[0]
        if index >= max_requests:
            return
        counter[0] += 1
        body, params = payloads(index)
        start = time.perf_counter()
        try:
            answer = await http.post(path, content=body, params=params)
            status = answer.status_code
            result.cache[answer.headers.get("x-cache", "-")] += 1
        except httpx.HTTPError:
            status = 0
        result.latencies_ms.append((time.perf_counter() - start) * 1e3)
        result.statuses[status] += 1
        result.requests += 1
        result.errors += status != 200


async def _run(url: str, path: str, payloads: Payloads, clients: int,
               max_requests: int, max_seconds: float) -> LoadResult:
    result = LoadResult(clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        counter = [0]
        start = time.perf_counter()
        deadline = time.monotonic() + max_seconds
        await asyncio.gather(*(
            _client(http, path, payloads, counter, max_requests, deadline, result)
            for _ in range(clients)
        ))
        result.seconds = time.perf_counter() - start
    return result


def run_load(url: str, path: str, payloads: Payloads, *, clients: int,
             max_requests: int, max_seconds: float) -> LoadResult:
    """Drive `url + path` with `clients` closed-loop clients; see the module docstring."""
    assert url.startswith(("http://127.", "http://localhost")), "load goes to loopback only"
    return asyncio.run(_run(url, path, payloads, clients, max_requests, max_seconds))
