"""RESULTS.md and the chart, from one run's figures, with each target checked."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from PIL import Image

from benchmarks.bare import BareResult
from benchmarks.chart import line_chart, side_by_side
from benchmarks.loadgen import LoadResult


def render(
    machine: str, bare: list[BareResult], served: Mapping[str, LoadResult],
    stats: Mapping[str, object], cold_start_s: float, cpu: Mapping[str, float],
) -> tuple[str, Image.Image]:
    lines = [
        "# Benchmark results",
        "",
        f"Measured by `make bench` (benchmarks/run.py) on {datetime.date.today()}: {machine}.",
        "Seeded weights (same cost as the official ones). Closed-loop clients over HTTP on "
        "loopback; 256 px unless said. Figures drift between runs on shared machines: compare "
        "within one run.",
        "",
    ]
    if bare:
        lines += ["## Bare model (engine alone, no Ray, no HTTP)", "",
                  "| layout | precision | side | batch | img/s | ms per batch |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {b.processes} proc x {b.threads} thr | {b.precision} | {b.side} | {b.batch} | "
                  f"{b.images_per_s:.2f} | {b.ms_per_batch:.0f} |" for b in bare]
        lines.append("")
    lines += ["## Served", "", "| scenario | req/s | p50 ms | p95 ms | p99 ms | errors | X-Cache |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in served.items():
        cache = ", ".join(f"{k} {v}" for k, v in sorted(r.cache.items()) if k != "-")
        lines.append(f"| {name} | {r.throughput:.2f} | {r.percentile(50):.1f} | {r.percentile(95):.1f} "
                     f"| {r.percentile(99):.1f} | {r.errors} | {cache} |")
    lines += ["", f"Model deployment after the run: `{stats}`", ""]
    if cpu:
        total = sum(cpu.values())
        lines += ["## CPU per request, all misses at 8 clients", "",
                  "From /proc, every Ray process and the load generator, over the c=8 run; "
                  f"{total:.0f} ms in all per request.", "",
                  "| process | CPU ms per request | share |", "| --- | ---: | ---: |"]
        lines += [f"| {name} | {ms:.1f} | {ms / total:.0%} |" for name, ms in cpu.items()]
        lines.append("")
    lines += ["## Targets", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    checks = [*targets(bare, served),
              ("cold start: `serve run serve_config.yaml` to the first picture < 30 s",
               f"{cold_start_s:.1f} s", cold_start_s < 30)]
    lines += [f"| {t} | {m} | {'met' if ok else '**not met**'} |" for t, m, ok in checks]
    lines += ["", "Memory over 5 minutes at saturation (3x capacity): the soak section below "
              "(`make soak`).", "", "![throughput and latency](throughput.png)", ""]
    return "\n".join(lines), chart(served)


def targets(bare: list[BareResult], s: Mapping[str, LoadResult]) -> list[tuple[str, str, bool]]:
    out: list[tuple[str, str, bool]] = []
    ours8 = s["ours misses c=8"].throughput
    if bare:
        ceiling = max(b.images_per_s for b in bare if b.side == 256)
        single = min(b.ms_per_batch for b in bare if b.side == 256 and b.batch == 1
                     and b.processes == 1 and b.threads == 1)
        out.append(("misses c=8 >= 80% of the bare ceiling (256 px)",
                    f"{ours8:.2f} vs {ceiling:.2f} img/s = {ours8 / ceiling:.0%}", ours8 >= 0.8 * ceiling))
        p50 = s["ours misses c=1"].percentile(50)
        out.append(("c=1 p50 <= 1.15 x bare single image + 10 ms",
                    f"{p50:.1f} ms vs {1.15 * single + 10:.1f} ms (single {single:.1f} ms)",
                    p50 <= 1.15 * single + 10))
    naive8 = s["naive misses c=8"].throughput
    out.append(("misses c=8 >= 3.5 x naive", f"{ours8:.2f} vs {naive8:.2f} req/s = {ours8 / naive8:.1f}x",
                ours8 >= 3.5 * naive8))
    hits8, echo8 = s["ours hits c=8"].throughput, s["echo c=8"].throughput
    out.append(("hits c=8 >= 85% of the echo", f"{hits8:.0f} vs {echo8:.0f} req/s = {hits8 / echo8:.0%}",
                hits8 >= 0.85 * echo8))
    hit1, echo1 = s["ours hits c=1"].percentile(50), s["echo c=1"].percentile(50)
    out.append(("hits c=1 p50 within 2 ms of the echo", f"{hit1:.1f} vs {echo1:.1f} ms", hit1 <= echo1 + 2))
    sq, naive_sq = s["ours 512 square c=8"].throughput, s["naive 512 square c=8"].throughput
    out.append(("512 square c=8 >= 3 x naive", f"{sq:.2f} vs {naive_sq:.2f} req/s = {sq / naive_sq:.1f}x",
                sq >= 3 * naive_sq))
    return out


def chart(s: Mapping[str, LoadResult]) -> Image.Image:
    def series(prefix: str, metric) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
        return [(r.clients, metric(r)) for name, r in s.items() if name.startswith(prefix)]

    throughput = line_chart(
        "all misses, 256 px: throughput", {
            "animegan-serve": series("ours misses", lambda r: r.throughput),
            "naive (seed)": series("naive misses", lambda r: r.throughput),
        }, x_label="concurrent clients", y_label="req/s")
    latency = line_chart(
        "all misses, 256 px: p50 latency", {
            "animegan-serve": series("ours misses", lambda r: r.percentile(50)),
            "naive (seed)": series("naive misses", lambda r: r.percentile(50)),
        }, x_label="concurrent clients", y_label="ms")
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
