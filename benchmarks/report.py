"""RESULTS.md and the chart, from one run's figures, with each target checked."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from PIL import Image

from benchmarks.bare import BareResult
from benchmarks.chart import line_chart, side_by_side
from benchmarks.load import Load


@dataclass(frozen=True)
class Scenario:
    """One served measurement: which app, what traffic, how many clients."""

    app: str  # ours, naive, echo
    traffic: str  # misses, hits, hot mix 80/20, 512 square, echo
    clients: int

    @property
    def label(self) -> str:
        return f"{self.app} {self.traffic} c={self.clients}"


Runs = dict[Scenario, Load]
CpuTable = dict[Scenario, dict[str, float]]  # CPU ms per request by process, per scenario


def render(
    machine: str,
    bare: list[BareResult],
    served: Runs,
    stats: Mapping[str, object],
    cold_start_s: float,
    cpu: CpuTable,
) -> tuple[str, Image.Image]:
    lines = [
        "# Benchmark results",
        "",
        f"Measured by `make bench` (python -m benchmarks.run) on {datetime.date.today()}: "
        f"{machine}.",
        "Seeded weights (same cost as the official ones). Closed-loop clients over HTTP on "
        "loopback; 256 px unless said. Figures drift between runs on shared machines: compare "
        "within one run.",
        "",
    ]
    if bare:
        lines += [
            "## Bare model (engine alone, no Ray, no HTTP)",
            "",
            "| layout | precision | side | batch | img/s | ms per batch |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {b.processes} proc x {b.threads} thr | {b.precision} | {b.side} | {b.batch} | "
            f"{b.images_per_s:.2f} | {b.ms_per_batch:.0f} |"
            for b in bare
        ]
        lines.append("")
    lines += [
        "## Served",
        "",
        "| scenario | req/s | p50 ms | p95 ms | p99 ms | errors | X-Cache |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scenario, r in served.items():
        cache = ", ".join(f"{k} {v}" for k, v in sorted(r.cache.items()) if k != "-")
        lines.append(
            f"| {scenario.label} | {r.throughput:.2f} | {r.percentile(50):.1f} "
            f"| {r.percentile(95):.1f} | {r.percentile(99):.1f} | {r.errors} | {cache} |"
        )
    lines += ["", f"Model deployment after the run: `{stats}`", ""]
    if cpu:
        lines += cpu_lines(cpu)
    lines += ["## Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    checks = [
        *targets(bare, served, cpu),
        (
            "cold start: `serve run serve_config.yaml` to the first picture < 30 s",
            f"{cold_start_s:.1f} s",
            cold_start_s < 30,
        ),
    ]
    lines += [f"| {t} | {m} | {'met' if ok else '**not met**'} |" for t, m, ok in checks]
    lines += [
        "",
        "Memory over 5 minutes at saturation (3x capacity): the soak section below (`make soak`).",
        "",
        "![throughput and latency](throughput.png)",
        "",
    ]
    return "\n".join(lines), chart(served)


def cpu_lines(cpu: CpuTable) -> list[str]:
    """One column per scenario: CPU ms per answered request in each process, and the total."""
    names = sorted(
        {n for spent in cpu.values() for n in spent},
        key=lambda n: -max(spent.get(n, 0.0) for spent in cpu.values()),
    )
    lines = [
        "## CPU per request at 8 clients",
        "",
        "From /proc, every Ray process and the load generator, over each run; milliseconds of CPU "
        "per answered request. Ours: all misses. The echo: what any answer through the Serve "
        "proxy costs here, whatever it says (a refusal included).",
        "",
        "| process | " + " | ".join(s.label for s in cpu) + " |",
        "| --- |" + " ---: |" * len(cpu),
    ]
    for name in names:
        lines.append(
            f"| {name} | "
            + " | ".join(f"{spent.get(name, 0.0):.1f}" for spent in cpu.values())
            + " |"
        )
    lines.append(
        "| **all** | "
        + " | ".join(f"**{sum(spent.values()):.0f}**" for spent in cpu.values())
        + " |"
    )
    return [*lines, ""]


def targets(bare: list[BareResult], runs: Runs, cpu: CpuTable) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each goal the project has set itself."""

    def s(app: str, traffic: str, clients: int) -> Load:
        return runs[Scenario(app, traffic, clients)]

    out: list[tuple[str, str, bool]] = []
    ours8 = s("ours", "misses", 8).throughput
    if bare:
        ceiling = max(b.images_per_s for b in bare if b.side == 256)
        single = min(
            b.ms_per_batch
            for b in bare
            if b.side == 256 and b.batch == 1 and b.processes == 1 and b.threads == 1
        )
        out.append(
            (
                "misses c=8 >= 70% of the bare ceiling (256 px)",
                f"{ours8:.2f} vs {ceiling:.2f} img/s = {ours8 / ceiling:.0%}",
                ours8 >= 0.7 * ceiling,
            )
        )
        out += cpu_targets(bare, cpu.get(Scenario("ours", "misses", 8), {}))
        p50 = s("ours", "misses", 1).percentile(50)
        out.append(
            (
                "c=1 p50 <= 1.15 x bare single image + 10 ms",
                f"{p50:.1f} ms vs {1.15 * single + 10:.1f} ms (single {single:.1f} ms)",
                p50 <= 1.15 * single + 10,
            )
        )
    naive8 = s("naive", "misses", 8).throughput
    out.append(
        (
            "misses c=8 >= 3.5 x naive",
            f"{ours8:.2f} vs {naive8:.2f} req/s = {ours8 / naive8:.1f}x",
            ours8 >= 3.5 * naive8,
        )
    )
    hits8, echo8 = s("ours", "hits", 8).throughput, s("echo", "echo", 8).throughput
    out.append(
        (
            "hits c=8 >= 85% of the echo",
            f"{hits8:.0f} vs {echo8:.0f} req/s = {hits8 / echo8:.0%}",
            hits8 >= 0.85 * echo8,
        )
    )
    hit1, echo1 = s("ours", "hits", 1).percentile(50), s("echo", "echo", 1).percentile(50)
    out.append(
        ("hits c=1 p50 within 2 ms of the echo", f"{hit1:.1f} vs {echo1:.1f} ms", hit1 <= echo1 + 2)
    )
    sq, naive_sq = s("ours", "512 square", 8).throughput, s("naive", "512 square", 8).throughput
    if bare:
        ceiling_512 = max(b.images_per_s for b in bare if b.side == 512)
        out.append(
            (
                "misses c=8 at 512 px (square) >= 85% of the bare ceiling at 512 px",
                f"{sq:.2f} vs {ceiling_512:.2f} img/s = {sq / ceiling_512:.0%}",
                sq >= 0.85 * ceiling_512,
            )
        )
    out.append(
        (
            "512 square c=8 >= 3 x naive",
            f"{sq:.2f} vs {naive_sq:.2f} req/s = {sq / naive_sq:.1f}x",
            sq >= 3 * naive_sq,
        )
    )
    return out


def cpu_targets(bare: list[BareResult], spent: Mapping[str, float]) -> list[tuple[str, str, bool]]:
    """Our own processes' CPU per 256 px miss: around the engine, and in the model replicas
    against the bare engine's CPU per picture (a 1-thread process per core, batch 1)."""
    if not spent:
        return []
    around = sum(ms for name, ms in spent.items() if "Ingress" in name or "CacheActor" in name)
    model = sum(ms for name, ms in spent.items() if "StyleModel" in name)
    out = [
        (
            "ingress + cache actor <= 12 ms of CPU per miss (256 px)",
            f"{around:.1f} ms",
            around <= 12,
        )
    ]
    for b in bare:
        if (b.processes, b.threads, b.precision, b.side, b.batch) == (2, 1, "bf16", 256, 1):
            out.append(
                (
                    "model replicas within 5 ms of CPU per picture of the bare engine (256 px)",
                    f"{model:.1f} vs {b.ms_per_batch:.1f} ms",
                    model <= b.ms_per_batch + 5,
                )
            )
    return out


def chart(runs: Runs) -> Image.Image:
    def series(app: str, metric: Callable[[Load], float]) -> list[tuple[float, float]]:
        return [
            (sc.clients, metric(r))
            for sc, r in runs.items()
            if sc.app == app and sc.traffic == "misses"
        ]

    throughput = line_chart(
        "all misses, 256 px: throughput",
        {
            "animegan-serve": series("ours", lambda r: r.throughput),
            "naive (seed)": series("naive", lambda r: r.throughput),
        },
        x_label="concurrent clients",
        y_label="req/s",
    )
    latency = line_chart(
        "all misses, 256 px: p50 latency",
        {
            "animegan-serve": series("ours", lambda r: r.percentile(50)),
            "naive (seed)": series("naive", lambda r: r.percentile(50)),
        },
        x_label="concurrent clients",
        y_label="ms",
    )
    return side_by_side(throughput, latency)


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section between `<!-- name -->` markers set to `body` (appended if new).

    `make bench` and `make soak` each own one section of RESULTS.md and keep the other's.
    """
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.rstrip()}\n{end}\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        return before + block + rest.split(end, 1)[1].lstrip("\n")
    return text.rstrip() + ("\n\n" if text.strip() else "") + block
