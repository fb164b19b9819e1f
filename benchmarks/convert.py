"""A library converted by `animegan-serve convert` (Ray Data) against the bare engine and against
`animegan-serve stylize` through the service, in one run, at 256 px and at 512 px.

The library: distinct 800 x 600 JPEG crops of the shared photos in nested folders, converted
with `--crop square`, so that every picture is the bare engine's square. Each command runs as a
user runs it, in its own process:

- bare: the engine alone, 2 processes x 1 thread, in the precision `auto` picks here, before
  and after the commands (averaged: this machine's speed drifts);
- convert: on a local Ray it starts itself; its own report gives the pace from the first
  result to the last and the start-up (Ray, the pool, the engine's loading and warm-up);
- stylize: the same files as jobs of `serve_config.yaml`'s app (`-j 8`), from the command's
  start to its end (the app already running).

Writes the "convert" section of benchmarks/RESULTS.md.
Usage: python -m benchmarks.convert [--files 500 120] [--sides 256 512]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bare import bare_rates
from benchmarks.common import ROOT, Photos, machine, served_app
from benchmarks.report import replace_section
from deployments.core.weights import write_seeded

SIDES = (256, 512)
FILES = (500, 100)  # 512 px costs 4x: fewer files keep the run under ~20 minutes
PACE = re.compile(r"([\d.]+) images/s after a start-up of ([\d.]+) s")
CLI = str(Path(sys.executable).parent / "animegan-serve")


def library(folder: Path, count: int, seed: int) -> None:
    """`count` distinct JPEGs in ten nested folders of `folder`."""
    for i, body in enumerate(Photos(seed).unique(count, width=800, height=600)):
        path = folder / f"set{i % 10}" / f"part{i % 3}" / f"photo {i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def listing_rate(folder: Path, count: int = 20_000) -> float:
    """Files per second that `convert`'s listing walks (empty files in 100 folders), in a read
    task's place, without keeping the rows."""
    from deployments.convert import Library, listing
    from deployments.core.options import StylizeOptions
    from deployments.core.settings import Settings

    for i in range(count):
        path = folder / f"f{i % 100:02d}" / f"{i}.jpg"
        path.parent.mkdir(exist_ok=True)
        path.touch()
    settings = Settings()
    options = StylizeOptions.build(settings, style=settings.default_style)
    library = Library(folder, folder.parent / "listed", options, settings, "0" * 40)
    start = time.perf_counter()
    walked = sum(1 for _ in listing(library))
    return walked / (time.perf_counter() - start)


def run(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """(seconds, last line of stderr) of a command that must succeed."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{command[:2]} exited {done.returncode}: {done.stderr[-2000:]}")
    return elapsed, done.stderr.strip().splitlines()[-1]


def auto_precision() -> str:
    """What `precision: auto` picks on this machine (the engine's own gate)."""
    from deployments.core.engine import choose_precision
    from deployments.core.network import Generator
    from deployments.core.weights import seeded_state_dict

    network = Generator()
    network.load_state_dict(seeded_state_dict(0))
    return choose_precision("auto", network)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sides", type=int, nargs="+", default=list(SIDES))
    parser.add_argument("--files", type=int, nargs="+", default=list(FILES))
    options = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    precision = auto_precision()
    print(f"  precision auto -> {precision}", flush=True)
    sides, counts = options.sides, dict(zip(options.sides, options.files, strict=True))
    first = bare_rates(sides, (precision,))

    with tempfile.TemporaryDirectory() as scratch, served_app() as (url, weights_dir):
        root = Path(scratch)
        env = {**os.environ, "ANIMEGAN_WEIGHTS_DIR": str(weights_dir)}
        for side in sides:
            library(root / f"photos{side}", counts[side], seed=side)
        stylized: dict[int, float] = {}
        for side in sides:
            flags = ["--size", str(side), "--crop", "square", "--style", "paprika"]
            into = ["-r", "-o", str(root / f"s{side}"), "--url", url, "-j", "8"]
            elapsed, line = run([CLI, "stylize", str(root / f"photos{side}"), *into, *flags], env)
            stylized[side] = counts[side] / elapsed
            print(f"  stylize {side}px: {stylized[side]:.2f} img/s ({line})", flush=True)
    # The service's cluster is gone: convert starts its own Ray, as on a machine without one.
    with tempfile.TemporaryDirectory() as scratch, tempfile.TemporaryDirectory() as weights:
        write_seeded(Path(weights), ["paprika"])
        root = Path(scratch)
        env = {**os.environ, "ANIMEGAN_WEIGHTS_DIR": weights}
        converted: dict[int, tuple[float, float, float]] = {}
        for side in sides:
            library(root / f"photos{side}", counts[side], seed=side)
            flags = ["--size", str(side), "--crop", "square", "--style", "paprika"]
            elapsed, line = run(
                [CLI, "convert", str(root / f"photos{side}"), str(root / f"c{side}"), *flags], env
            )
            pace = PACE.search(line)
            assert pace is not None, line
            converted[side] = (float(pace[1]), float(pace[2]), counts[side] / elapsed)
            print(f"  convert {side}px: {line} (wall {elapsed:.1f} s)", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "tree").mkdir()
        listed = listing_rate(Path(scratch) / "tree")
    print(f"  listing: {listed:,.0f} files/s", flush=True)
    second = bare_rates(sides, (precision,))
    bare = {side: (first[side] + second[side]) / 2 for side in sides}
    text = report(sides, counts, bare, converted, stylized, precision, listed)
    path = ROOT / "benchmarks" / "RESULTS.md"
    path.write_text(replace_section(path.read_text(), "convert", text))
    print(text)


def report(
    sides: list[int],
    counts: dict[int, int],
    bare: dict[int, float],
    converted: dict[int, tuple[float, float, float]],
    stylized: dict[int, float],
    precision: str,
    listed: float,
) -> str:
    lines = [
        "## Converting a library (`python -m benchmarks.convert`, part of `make bench`)",
        "",
        f"Machine: {machine()}. Distinct 800 x 600 JPEGs in nested folders, `--crop square`,",
        f"PNG results, {precision} (what `auto` picks here). Bare: the engine alone, 2 processes x",
        "1 thread, before and after the commands, averaged. `convert`: on the local Ray it starts,",
        "pace from its first result to its last (decoding, resizing, encoding and writing",
        "included), start-up apart, then the whole command's wall time. `stylize`: the same files",
        "as jobs of `serve_config.yaml`'s app, already running, `-j 8`.",
        "",
        "| side | files | bare img/s | convert img/s | of bare | start-up | convert, whole run | "
        "stylize via the service | of bare |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side in sides:
        pace, start_up, whole = converted[side]
        lines.append(
            f"| {side} | {counts[side]} | {bare[side]:.2f} | {pace:.2f} | {pace / bare[side]:.0%} "
            f"| {start_up:.1f} s | {whole:.2f} img/s | {stylized[side]:.2f} img/s | "
            f"{stylized[side] / bare[side]:.0%} |"
        )
    lines += [
        "",
        f"The listing walks {listed:,.0f} files/s (20,000 empty files in 100 folders, each",
        "stat'ed for an existing result), holding one folder's names at a time.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
