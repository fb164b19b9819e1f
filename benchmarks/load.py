"""The one load driver of the benchmarks, the soak and the fault tests.

Closed loop: N clients, each sending its next request when its last one is answered (what a
fixed pool of users does). Open loop: a request every 1/rate seconds whatever the answers do
(what a crowd does). Jobs: an open-loop crowd of people, each submitting a job, following its
events to the end and fetching the picture. Every run is bounded in requests and time, and
only loopback is a target.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

# The i-th request's (body, query parameters).
Payloads = Callable[[int], tuple[bytes, Mapping[str, str | int]]]


@dataclass(frozen=True)
class Answer:
    """One request's outcome; `status` 0 means no HTTP answer (`failure` says why)."""

    status: int
    ms: float
    cache: str = "-"  # X-Cache
    code: str | None = None  # the JSON error code of a refusal
    retry_after: str | None = None
    failure: str | None = None  # "hung" past the timeout, else the exception's name


@dataclass
class Load:
    """Every answer of one run, in the order they came."""

    clients: int = 0  # closed loop; 0 for open loop
    offered_per_s: float = 0.0  # open loop
    seconds: float = 0.0
    answers: list[Answer] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.answers)

    @property
    def errors(self) -> int:
        return sum(a.status != 200 for a in self.answers)

    @property
    def throughput(self) -> float:
        """Pictures (200s) per second."""
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0

    @property
    def statuses(self) -> Counter[int]:
        return Counter(a.status for a in self.answers)

    @property
    def cache(self) -> Counter[str]:
        return Counter(a.cache for a in self.answers)

    def latencies_ms(self, status: int | None = None) -> list[float]:
        return [a.ms for a in self.answers if status is None or a.status == status]

    def percentile(self, q: float, status: int | None = None) -> float:
        times = self.latencies_ms(status)
        if len(times) < 2:
            return times[0] if times else float("nan")
        return statistics.quantiles(times, n=100, method="inclusive")[int(q) - 1]


def run_closed(
    url: str,
    path: str,
    payloads: Payloads,
    *,
    clients: int,
    max_requests: int,
    max_seconds: float,
) -> Load:
    """`clients` closed-loop clients until `max_requests` were sent or `max_seconds` passed."""
    load = Load(clients=clients)
    asyncio.run(_closed(url, path, payloads, load, max_requests, max_seconds, threading.Event()))
    return load


def run_open(
    url: str, path: str, payloads: Payloads, *, rate: float, seconds: float, timeout_s: float
) -> Load:
    """A request every 1/`rate` s for `seconds`; answers later than `timeout_s` count as hung."""
    load = Load(offered_per_s=rate)
    asyncio.run(_open(url, path, payloads, load, seconds, timeout_s))
    return load


@contextmanager
def in_background(
    url: str,
    path: str,
    payloads: Payloads,
    *,
    clients: int,
    max_seconds: float = 300,
) -> Iterator[Load]:
    """Closed-loop clients in a thread while the block runs; `answers` grows as they come.

    On leaving, the clients finish their requests in flight; one that does not is a hang.
    """
    load, stop = Load(clients=clients), threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            _closed(url, path, payloads, load, 10**9, max_seconds, stop, timeout_s=90)
        )
    )
    thread.start()
    try:
        yield load
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive(), "a request hung"


async def _closed(
    url: str,
    path: str,
    payloads: Payloads,
    load: Load,
    max_requests: int,
    max_seconds: float,
    stop: threading.Event,
    *,
    timeout_s: float = 120,
) -> None:
    _check_loopback(url)
    limits = httpx.Limits(max_connections=load.clients, max_keepalive_connections=load.clients)
    sent = 0
    deadline = time.monotonic() + max_seconds
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:

        async def client() -> None:
            nonlocal sent
            while sent < max_requests and time.monotonic() < deadline and not stop.is_set():
                sent += 1
                body, params = payloads(sent - 1)
                load.answers.append(await _send(http, path, body, params))

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(load.clients)))
        load.seconds = time.perf_counter() - start


async def _open(
    url: str, path: str, payloads: Payloads, load: Load, seconds: float, timeout_s: float
) -> None:
    _check_loopback(url)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:

        async def one(index: int) -> None:
            body, params = payloads(index)
            load.answers.append(await _send(http, path, body, params))

        start = time.perf_counter()
        await asyncio.gather(*await _arrivals(one, load.offered_per_s, seconds))
        load.seconds = time.perf_counter() - start


async def _send(
    http: httpx.AsyncClient, path: str, body: bytes, params: Mapping[str, str | int]
) -> Answer:
    start = time.perf_counter()
    try:
        answer = await http.post(path, content=body, params=params)
    except httpx.TimeoutException:
        return Answer(0, (time.perf_counter() - start) * 1e3, failure="hung")
    except httpx.HTTPError as exc:
        return Answer(0, (time.perf_counter() - start) * 1e3, failure=type(exc).__name__)
    ms = (time.perf_counter() - start) * 1e3
    code = None
    if answer.status_code != 200 and answer.headers.get("content-type") == "application/json":
        code = answer.json().get("error", {}).get("code")
    return Answer(
        answer.status_code,
        ms,
        answer.headers.get("x-cache", "-"),
        code,
        answer.headers.get("retry-after"),
    )


@dataclass(frozen=True)
class JobOutcome:
    """One person's job: how the submission was answered, then how the job ended."""

    submitted: int  # the POST's status: 202, or a refusal (429, 503), 0 if it failed
    ended: str | None = None  # done / failed / lost (the stream ended or broke without an end)
    done_s: float | None = None  # when the picture was fetched, from the start of the run
    code: str | None = None  # the refusal's or failure's error code
    retry_after: str | None = None


@dataclass
class JobsLoad:
    """Every job of one run."""

    offered_per_s: float
    seconds: float = 0.0  # the offered window; jobs may end after it
    jobs: list[JobOutcome] = field(default_factory=list)

    def served_per_s(self, within_s: float | None = None) -> float:
        """Pictures delivered per second within the first `within_s` (default: the window)."""
        window = within_s or self.seconds
        done = sum(1 for j in self.jobs if j.done_s is not None and j.done_s <= window)
        return done / window if window else 0.0


def run_jobs(
    url: str, payloads: Payloads, *, rate: float, seconds: float, people: int, timeout_s: float
) -> JobsLoad:
    """Open loop through `/v1/jobs`, the i-th job from person i % `people` (X-Forwarded-For)."""
    load = JobsLoad(offered_per_s=rate)
    asyncio.run(_jobs(url, payloads, load, seconds, people, timeout_s))
    return load


async def _jobs(
    url: str, payloads: Payloads, load: JobsLoad, seconds: float, people: int, timeout_s: float
) -> None:
    _check_loopback(url)
    limits = httpx.Limits(max_connections=4000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        start = time.perf_counter()

        async def one(index: int) -> None:
            body, params = payloads(index)
            who = index % people
            person = {"X-Forwarded-For": f"10.77.{who // 250}.{who % 250 + 1}"}
            load.jobs.append(await _job(http, body, params, person, start))

        tasks = await _arrivals(one, load.offered_per_s, seconds)
        load.seconds = time.perf_counter() - start
        await asyncio.gather(*tasks)


async def _arrivals(
    one: Callable[[int], Coroutine[Any, Any, None]], rate: float, seconds: float
) -> list[asyncio.Task[None]]:
    """Start `one(i)` every 1/`rate` s for `seconds`, whatever the earlier ones are doing."""
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        while len(tasks) < elapsed * rate:
            tasks.append(asyncio.create_task(one(len(tasks))))
        await asyncio.sleep(0.005)
    return tasks


async def _job(
    http: httpx.AsyncClient,
    body: bytes,
    params: Mapping[str, str | int],
    headers: dict[str, str],
    start: float,
) -> JobOutcome:
    try:
        answer = await http.post("/v1/jobs", content=body, params=params, headers=headers)
    except httpx.HTTPError:
        return JobOutcome(0)
    if answer.status_code != 202:
        code = answer.json()["error"]["code"] if answer.status_code >= 400 else None
        return JobOutcome(
            answer.status_code, code=code, retry_after=answer.headers.get("retry-after")
        )
    job = answer.json()
    ended, result, code = job["status"], job["result"], None
    try:
        if ended not in ("done", "failed"):
            ended, result, code = await _follow(http, job["id"], headers)
        if ended == "done":
            picture = await http.get(result, headers=headers)
            if picture.status_code != 200:
                return JobOutcome(202, "lost", code=f"result {picture.status_code}")
    except httpx.HTTPError as exc:
        return JobOutcome(202, "lost", code=type(exc).__name__)
    done_s = time.perf_counter() - start if ended == "done" else None
    return JobOutcome(202, ended, done_s, code)


async def _follow(
    http: httpx.AsyncClient, job_id: str, headers: dict[str, str]
) -> tuple[str, str | None, str | None]:
    """A job's events to its end: how it ended (`lost` if the stream ended first), its result,
    and its error code (or what a lost stream left out)."""
    async with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as events:
        event = None
        async for line in events.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("done", "failed"):
                data = json.loads(line.removeprefix("data: "))
                return event, data.get("result"), (data.get("error") or {}).get("code")
    return "lost", None, await _left_out(http, job_id, headers, event)


async def _left_out(
    http: httpx.AsyncClient, job_id: str, headers: dict[str, str], event: str | None
) -> str:
    """What a stream that ended without an end left out: its last event, the job's state now."""
    state = await http.get(f"/v1/jobs/{job_id}", headers=headers)
    status = state.json().get("status") if state.status_code == 200 else state.status_code
    return f"stream ended after {event or 'no event'}; then {status}"


def _check_loopback(url: str) -> None:
    if not url.startswith(("http://127.", "http://localhost")):
        raise ValueError(f"load goes to loopback addresses only, not {url}")
