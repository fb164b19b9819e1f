"""`make soak`: drive the service at 3x its capacity for a set time, then watch it recover.

Measures capacity first (closed loop, 8 clients, unique 256 px photo crops, with the CPU each
picture costs), then two overloads of the same offered rate:

1. `POST /v1/stylize` open loop: each request must end in 200, or 503 with Retry-After, or 504
   at its deadline, and none may hang past it; pictures served, and the CPU each refusal cost;
   RSS of every Ray process from start to end; then how long single requests take to get back
   to their quiet latency.
2. `/v1/jobs`: a crowd of people (distinct X-Forwarded-For addresses) each submitting a job,
   following its events to the end and fetching the picture: every job accepted must end done,
   none lost; pictures delivered during the overload.
3. `/v1/jobs` again with 5-15 MB uploads: the line fills by bytes (`max_queued_bytes`), the
   refusals carry Retry-After, every accepted job ends, and every process's memory stays
   within its bound.

Writes the figures into the soak section of benchmarks/RESULTS.md.
Usage: python -m benchmarks.soak [--seconds 300] [--jobs-seconds 300] [--factor 3]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from benchmarks.common import (
    ROOT,
    Photos,
    deploy_ours,
    distinct,
    machine,
    start_cluster,
    stop_cluster,
)
from benchmarks.load import JobsLoad, Load, run_closed, run_jobs, run_open
from benchmarks.procs import cpu_ms_since, cpu_snapshot, ray_processes, rss_mib
from benchmarks.report import replace_section

PARAMS: dict[str, str | int] = {"style": "paprika", "size": 256}
DEADLINE_S = 60.0  # the service's request_timeout_s default
HANG_S = DEADLINE_S + 15  # an answer later than this counts as hung
PEOPLE = 500  # distinct client addresses of the jobs crowd
JOB_TIMEOUT_S = 600.0  # a job not ended by then (from its submission) counts as lost
MAX_QUEUED_BYTES = 4 * 1024**3  # the settings' default, which the soak's app keeps


def single_latency_ms(url: str, body: bytes) -> float:
    start = time.perf_counter()
    httpx.post(f"{url}/v1/stylize", content=body, params=PARAMS, timeout=HANG_S).raise_for_status()
    return (time.perf_counter() - start) * 1e3


def recovery_s(url: str, bodies: list[bytes], quiet_ms: float, limit_s: float = 60) -> float:
    """Seconds after the load stops until 3 single requests in a row are back near `quiet_ms`."""
    start = time.perf_counter()
    good = 0
    index = 5_000_000
    while time.perf_counter() - start < limit_s:
        index += 1
        try:
            fine = single_latency_ms(url, distinct(bodies, index)) <= 1.5 * quiet_ms + 20
        except httpx.HTTPError:
            fine = False
        good = good + 1 if fine else 0
        if good == 3:
            return time.perf_counter() - start
        time.sleep(0.2)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=300.0, help="length of the overload")
    parser.add_argument("--jobs-seconds", type=float, default=300.0, help="the jobs overload")
    parser.add_argument("--factor", type=float, default=3.0, help="offered load / capacity")
    parser.add_argument("--large-seconds", type=float, default=180.0, help="5-15 MB uploads")
    options = parser.parse_args()

    from deployments.core.settings import OFFICIAL_STYLES
    from deployments.core.weights import write_seeded

    bodies = Photos(seed=7).unique(400, width=512, height=512)
    with tempfile.TemporaryDirectory() as folder:
        write_seeded(Path(folder), list(OFFICIAL_STYLES))
        url = start_cluster()
        try:
            deploy_ours(url, Path(folder))
            report = soak(
                url,
                bodies,
                options.seconds,
                options.jobs_seconds,
                options.factor,
                options.large_seconds,
            )
        finally:
            stop_cluster()
    path = ROOT / "benchmarks" / "RESULTS.md"
    path.write_text(replace_section(path.read_text() if path.exists() else "", "soak", report))
    print(report)


def soak(
    url: str,
    bodies: list[bytes],
    seconds: float,
    jobs_seconds: float,
    factor: float,
    large_seconds: float,
) -> str:
    print("warming up (8 s), then measuring capacity (8 clients, 15 s)", flush=True)
    run_closed(
        url,
        "/v1/stylize",
        lambda i: (distinct(bodies, i), PARAMS),
        clients=8,
        max_requests=10_000,
        max_seconds=8,
    )
    before = cpu_snapshot()
    at_capacity = run_closed(
        url,
        "/v1/stylize",
        lambda i: (distinct(bodies, 100_000 + i), PARAMS),
        clients=8,
        max_requests=10_000,
        max_seconds=15,
    )
    capacity = at_capacity.throughput
    per_picture = cpu_ms_since(before, at_capacity.requests)
    picture_ms = sum(per_picture.values())
    quiet = statistics.median(
        single_latency_ms(url, distinct(bodies, 200_000 + i)) for i in range(7)
    )
    print(
        f"capacity {capacity:.1f} req/s ({picture_ms:.0f} ms CPU each), "
        f"quiet single request {quiet:.0f} ms",
        flush=True,
    )

    memory = Memory()
    cache_start = cache_mib(url)
    rate = factor * capacity
    print(f"offering {rate:.1f} req/s for {seconds:.0f} s", flush=True)

    outcome: list[Load] = []
    driver = threading.Thread(
        target=lambda: outcome.append(
            run_open(
                url,
                "/v1/stylize",
                lambda i: (distinct(bodies, 1_000_000 + i), PARAMS),
                rate=rate,
                seconds=seconds,
                timeout_s=HANG_S,
            )
        )
    )
    before = cpu_snapshot()
    driver.start()
    memory.watch(driver, seconds)
    (result,) = outcome
    spent = cpu_ms_since(before)
    cache_end = cache_mib(url)
    back_s = recovery_s(url, bodies, quiet)
    refusals = sum(a.status != 200 for a in result.answers)
    served = result.requests - refusals
    per_refusal = {
        name: (ms - served * per_picture.get(name, 0.0)) / max(refusals, 1)
        for name, ms in spent.items()
    }
    text = render(result, capacity, quiet, back_s, memory)
    text += (
        f"\nCPU: a picture cost {picture_ms:.0f} ms of CPU over the whole machine at capacity "
        f"(8 clients); during the overload the machine spent {sum(spent.values()) / 1e3:.0f} s, "
        f"so each of the {refusals:,} refusals cost about {sum(per_refusal.values()):.1f} ms, "
        "the load generator's share included. By process (what the overload spent beyond the "
        "pictures' cost at capacity, per refusal): "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in per_refusal.items() if abs(ms) >= 0.1)
        + ".\n"
        f"\nResults held in the caches (bounded by cache_max_bytes and local_cache_max_bytes), "
        f"start -> end: cluster cache {cache_start[0]:.0f} -> {cache_end[0]:.0f} MiB, the "
        f"ingress's hot cache {cache_start[1]:.0f} -> {cache_end[1]:.0f} MiB.\n"
    )
    print(f"jobs: offering {rate:.1f} jobs/s for {jobs_seconds:.0f} s", flush=True)
    before = cpu_snapshot()
    jobs = offer_jobs(url, bodies, 3_000_000, rate, jobs_seconds)
    delivered = sum(j.ended == "done" for j in jobs.jobs)
    per_job = cpu_ms_since(before, delivered)
    text += render_jobs(jobs, capacity, per_job, per_picture)
    return text + large_uploads(url, factor, large_seconds)


def large_uploads(url: str, factor: float, seconds: float) -> str:
    """The jobs overload again with 5-15 MB uploads, at `factor` times what the service
    answers of them: the line fills by bytes, not count."""
    bodies = Photos(seed=11).large(8)
    sizes = sorted(len(b) / 1e6 for b in bodies)
    capacity = run_closed(
        url,
        "/v1/stylize",
        lambda i: (distinct(bodies, 4_000_000 + i), PARAMS),
        clients=4,
        max_requests=10_000,
        max_seconds=20,
    ).throughput
    rate = factor * capacity
    print(
        f"large uploads ({sizes[0]:.0f}-{sizes[-1]:.0f} MB): capacity {capacity:.2f}/s, "
        f"offering {rate:.2f} jobs/s for {seconds:.0f} s",
        flush=True,
    )
    memory = Memory()
    queued_bytes: list[int] = []
    outcome: list[JobsLoad] = []
    driver = threading.Thread(
        target=lambda: outcome.append(offer_jobs(url, bodies, 5_000_000, rate, seconds))
    )
    driver.start()
    memory.watch(driver, seconds, also=lambda: queued_bytes.append(line_bytes(url)))
    (jobs,) = outcome
    lines = [
        "",
        f"### Large uploads through /v1/jobs, {jobs.seconds:.0f} s",
        "",
        f"Capacity for these uploads (4 clients, /v1/stylize, 256 px results): "
        f"{capacity:.2f} req/s. {len(jobs.jobs):,} jobs offered at {jobs.offered_per_s:.2f}/s "
        f"({jobs.offered_per_s / capacity:.0f}x) by {PEOPLE} people, each a JPEG of "
        f"{sizes[0]:.1f}-{sizes[-1]:.1f} MB (the line's bound: max_queued_bytes "
        f"{MAX_QUEUED_BYTES / 2**30:.0f} GiB, 1 GiB a client); the queued uploads peaked at "
        f"{max(queued_bytes, default=0) / 2**20:,.0f} MiB.",
        *job_ends(jobs),
        "",
        f"Pictures delivered: {jobs.served_per_s():.2f} per s. The load generator's own peak "
        f"RSS (the uploads it has in flight): {peak_rss_mib():,.0f} MiB.",
        "",
        *memory.table(),
    ]
    return "\n".join(lines) + "\n"


def offer_jobs(url: str, bodies: list[bytes], first: int, rate: float, seconds: float) -> JobsLoad:
    """Jobs of distinct `bodies` (from the `first`-th) offered open loop by PEOPLE people."""
    return run_jobs(
        url,
        lambda i: (distinct(bodies, first + i), PARAMS),
        rate=rate,
        seconds=seconds,
        people=PEOPLE,
        timeout_s=JOB_TIMEOUT_S,
    )


def job_ends(jobs: JobsLoad) -> list[str]:
    """How the submissions were answered and the accepted jobs ended (two tables), and the
    refusals' codes and Retry-After."""
    submitted = Counter(j.submitted for j in jobs.jobs)
    ended = Counter(j.ended for j in jobs.jobs if j.submitted == 202)
    codes = Counter(j.code for j in jobs.jobs if j.code)
    no_retry = sum(j.submitted in (429, 503) and not j.retry_after for j in jobs.jobs)
    retry = sorted(float(j.retry_after) for j in jobs.jobs if j.retry_after)
    return [
        "",
        "| submission answered | count |",
        "| --- | ---: |",
        *(f"| {status or 'no answer'} | {n:,} |" for status, n in sorted(submitted.items())),
        "",
        "| accepted job ended | count |",
        "| --- | ---: |",
        *(f"| {end} | {n:,} |" for end, n in sorted(ended.items(), key=str)),
        "",
        f"Error codes seen: {dict(codes) or 'none'}; refusals without Retry-After: {no_retry}"
        + (
            f"; Retry-After p50 {statistics.median(retry):.0f} s, max {retry[-1]:.0f} s."
            if retry
            else "."
        ),
    ]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def line_bytes(url: str) -> int:
    """The uploads the line holds queued now."""
    try:
        line = httpx.get(f"{url}/v1/stats", timeout=10).json()["line"]
    except (httpx.HTTPError, KeyError, TypeError):
        return 0
    return int(line.get("queued_bytes", 0)) if line else 0


class Memory:
    """RSS of every Ray process: at the start, half-time, its peak and the end of a phase."""

    def __init__(self) -> None:
        self.names = ray_processes()
        self.start = {pid: rss_mib(pid) for pid in self.names}
        self.peak = dict(self.start)
        self.mid: dict[int, float | None] = {}
        self.end: dict[int, float | None] = {}

    def watch(
        self, driver: threading.Thread, seconds: float, also: Callable[[], None] = lambda: None
    ) -> None:
        """Sample every few seconds until `driver` ends."""
        began = time.monotonic()
        while driver.is_alive():
            driver.join(timeout=5)
            also()
            for pid in self.names:
                now = rss_mib(pid)
                if now is not None and self.start.get(pid) is not None:
                    self.peak[pid] = max(self.peak[pid] or 0, now)
            if not self.mid and time.monotonic() - began >= seconds / 2:
                self.mid.update({pid: rss_mib(pid) for pid in self.names})
        self.end = {pid: rss_mib(pid) for pid in self.names}

    def table(self) -> list[str]:
        lines = [
            "RSS of every Ray process: growth that stops by half-time is a high-water mark "
            "(buffers of the busiest moment, caches filling to their bounds); growth that goes "
            "on is a leak.",
            "",
            "| Ray process | start MiB | half-time MiB | peak MiB | end MiB | second half |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for pid, name in sorted(self.names.items(), key=lambda kv: kv[1]):
            values = (self.start.get(pid), self.mid.get(pid), self.peak.get(pid), self.end.get(pid))
            first, half, top, last = values
            if first is None or half is None or top is None or last is None:
                lines.append(f"| {name} ({pid}) | {first or 0:.0f} | | | gone | |")
                continue
            lines.append(
                f"| {name} | {first:.0f} | {half:.0f} | {top:.0f} | {last:.0f} "
                f"| {last - half:+.0f} |"
            )
        return lines


def render_jobs(
    jobs: JobsLoad,
    capacity: float,
    per_job: dict[str, float],
    per_picture: dict[str, float],
) -> str:
    served = jobs.served_per_s()
    lines = [
        "",
        f"### The same overload through /v1/jobs, {jobs.seconds:.0f} s",
        "",
        f"{len(jobs.jobs):,} jobs offered at {jobs.offered_per_s:.1f}/s by {PEOPLE} people "
        "(distinct X-Forwarded-For addresses), each following its events to the end and "
        "fetching the picture.",
        *job_ends(jobs),
        f"Pictures delivered during the overload: {served:.1f} per s ({served / capacity:.0%} "
        "of capacity).",
        "",
        "CPU ms per delivered job (refused submissions' cost included) against a synchronous "
        "picture at capacity:",
        "",
        "| process | per job | per picture at capacity |",
        "| --- | ---: | ---: |",
        *(
            f"| {name} | {ms:.1f} | {per_picture.get(name, 0.0):.1f} |"
            for name, ms in per_job.items()
            if ms >= 0.5
        ),
        f"| all | {sum(per_job.values()):.0f} | {sum(per_picture.values()):.0f} |",
    ]
    return "\n".join(lines) + "\n"


def cache_mib(url: str) -> tuple[float, float]:
    """MiB of results in the cluster cache and in the answering ingress's hot cache."""
    figures = httpx.get(f"{url}/v1/stats", timeout=10).json()
    cluster = (figures["cache"] or {}).get("bytes", 0)
    return cluster / 2**20, figures["ingress"]["hot_cache"]["bytes"] / 2**20


def render(
    result: Load,
    capacity: float,
    quiet_ms: float,
    back_s: float,
    memory: Memory,
) -> str:
    total = result.requests
    answered = Counter(a.status for a in result.answers if a.status)
    hung = sum(a.failure == "hung" for a in result.answers)
    other_errors = Counter(a.failure for a in result.answers if a.failure not in (None, "hung"))
    missing_retry_after = sum(a.status == 503 and not a.retry_after for a in result.answers)
    lines = [
        f"## Soak: {result.offered_per_s / capacity:.0f}x capacity for {result.seconds:.0f} s",
        "",
        f"`make soak` (python -m benchmarks.soak), {time.strftime('%Y-%m-%d')}, {machine()}.",
        f"Capacity (8 clients, all misses, 256 px): {capacity:.1f} req/s; offered open loop: "
        f"{result.offered_per_s:.1f} req/s; quiet single request: {quiet_ms:.0f} ms.",
        "",
        "| answer | count | share | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for status, count in sorted(answered.items()):
        times = result.latencies_ms(status)
        p99 = statistics.quantiles(times, n=100)[98] if len(times) > 1 else times[0]
        lines.append(
            f"| {status} | {count} | {count / total:.1%} | {statistics.median(times):.0f} "
            f"| {p99:.0f} |"
        )
    lines.append(f"| hung past {HANG_S:.0f} s | {hung} | {hung / total:.1%} | | |")
    for name, count in sorted(other_errors.items()):
        lines.append(f"| {name} | {count} | {count / total:.1%} | | |")
    served = result.throughput
    lines += [
        "",
        f"Pictures served during the overload: {served:.1f} req/s ({served / capacity:.0%} of "
        f"capacity). 503s without Retry-After: {missing_retry_after}. Back to the quiet "
        f"latency (3 single requests in a row within 1.5x + 20 ms) {back_s:.1f} s after the load "
        "stopped.",
        "",
        *memory.table(),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
