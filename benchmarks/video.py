"""Video through the service against the bare engine, in one run: a 10 s clip (a pan across one
of the shared photos, with a tone) at 256 px and at 512 px, square frames so that each frame is
the bare engine's picture.

- bare: the engine alone, 2 processes x 1 thread (the app's two model replicas), images/s,
  before the app starts and after it stops (averaged: this machine's speed drifts);
- served: the clip as a job through HTTP (`serve_config.yaml`'s app), frames/s from upload to
  the result fetched (decoding, the line, the model replicas, encoding and the cache included),
  and the seconds from the upload to a playable result;
- idle: the CPU the same app spends with nothing to do (Ray's and Serve's processes, ours),
  which on a small machine comes out of the cores the bare engine has to itself.

Writes the "video" section of benchmarks/RESULTS.md.
Usage: python -m benchmarks.video [--seconds 10] [--fps 24]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from fractions import Fraction

import av
import httpx
import numpy as np
from PIL import Image

from benchmarks.bare import bare_rates
from benchmarks.common import PHOTOS, ROOT, machine, served_app
from benchmarks.procs import cpu_ms_since, cpu_snapshot
from benchmarks.report import replace_section

SIDES = (256, 512)
IDLE_S = 20  # the idle app is measured this long, once it has settled
SETTLE_S = 10


def clip(side: int, seconds: float, fps: int) -> bytes:
    """A `seconds` pan of square `side` frames at `fps`, H.264 with an AAC tone."""
    count = round(seconds * fps)
    photo = Image.open(sorted(PHOTOS.glob("*.jpg"))[0]).convert("RGB")
    photo = photo.resize((side + count, side))  # one pixel further right per frame
    pixels = np.asarray(photo)
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width = video.height = side
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=48_000)
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(pixels[:, i : i + side].copy(), format="rgb24")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        samples = np.arange(int(seconds * 48_000)) / 48_000
        wave = (0.3 * np.sin(2 * np.pi * 440 * samples)).astype(np.float32)[None, :]
        for start in range(0, wave.shape[1], 1024):
            chunk = av.AudioFrame.from_ndarray(wave[:, start : start + 1024], format="flt")
            chunk.sample_rate, chunk.pts, chunk.time_base = 48_000, start, Fraction(1, 48_000)
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    return out.getvalue()


def served(url: str, data: bytes, side: int) -> tuple[float, float, int]:
    """(seconds from the upload to the result fetched, of those until it started, frames).
    The job is followed by its event stream, which costs this process next to nothing (a
    poll loop here cost ~15 ms of CPU per frame, taken from the service on 2 cores)."""
    start = time.monotonic()
    job = httpx.post(
        f"{url}/v1/jobs", content=data, params={"style": "paprika", "size": side}, timeout=60
    ).json()
    started, result = None, None
    with httpx.stream("GET", f"{url}/v1/jobs/{job['id']}/events", timeout=600) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                if started is None and event != "queued":
                    started = time.monotonic() - start
            elif line.startswith("data: ") and event in ("done", "failed"):
                result = json.loads(line.removeprefix("data: "))
    assert result is not None and event == "done", result
    answer = httpx.get(url + result["result"], timeout=60)
    elapsed = time.monotonic() - start
    with av.open(io.BytesIO(answer.content), "r") as container:
        frames = sum(1 for _ in container.decode(video=0))
    return elapsed, started or 0.0, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--sides", type=int, nargs="+", default=list(SIDES))
    options = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    sides = options.sides
    first = bare_rates(sides)
    clips = {side: clip(side, options.seconds, options.fps) for side in sides}

    rows = []
    cpu: dict[int, dict[str, float]] = {}
    with served_app() as (url, _):
        time.sleep(SETTLE_S)
        before = cpu_snapshot()
        time.sleep(IDLE_S)
        idle = cpu_ms_since(before, per=IDLE_S)  # ms of CPU per second
        print(f"  idle app: {sum(idle.values()):.0f} ms of CPU per second", flush=True)
        for side in sides:
            before = cpu_snapshot()
            elapsed, started, frames = served(url, clips[side], side)
            cpu[side] = cpu_ms_since(before, per=frames)
            rate = frames / elapsed
            rows.append((side, frames, first[side], rate, elapsed, started))
            print(
                f"  served {side}px: {frames} frames in {elapsed:.1f} s = {rate:.2f} frames/s "
                f"({rate / first[side]:.0%} of the bare {first[side]:.2f} img/s before)",
                flush=True,
            )
    # This machine's speed drifts: the bare engine before and after the app, averaged.
    second = bare_rates(sides)
    bare = {side: (first[side] + second[side]) / 2 for side in sides}
    rows = [(side, frames, bare[side], *rest) for side, frames, _, *rest in rows]
    text = report(rows, cpu, idle, options)
    path = ROOT / "benchmarks" / "RESULTS.md"
    path.write_text(replace_section(path.read_text(), "video", text))
    print(text)


def report(
    rows: list[tuple[int, int, float, float, float, float]],
    cpu: dict[int, dict[str, float]],
    idle: dict[str, float],
    options: argparse.Namespace,
) -> str:
    cores = os.cpu_count() or 1
    floor = sum(idle.values()) / (10 * cores)  # percent of the machine
    lines = [
        "## Video (`python -m benchmarks.video`, part of `make bench`)",
        "",
        f"Machine: {machine()}. A {options.seconds:g} s clip at {options.fps} fps (H.264 + AAC,",
        "square frames) as one job through HTTP on `serve_config.yaml`'s app, against the bare",
        "engine (2 processes x 1 thread, the faster precision; before and after the app,",
        "averaged) in the same run. The idle app",
        f"spends {sum(idle.values()):.0f} ms of CPU a second ({floor:.0f}% of the {cores} cores),",
        f"so on this machine a served clip can reach at most ~{100 - floor:.0f}% of bare.",
        "",
        "| side | frames | bare img/s | served frames/s | share of bare | upload to result | "
        "upload to start |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side, frames, bare, rate, elapsed, started in rows:
        lines.append(
            f"| {side} | {frames} | {bare:.2f} | {rate:.2f} | {rate / bare:.0%} | "
            f"{elapsed:.1f} s | {started:.1f} s |"
        )
    lines += [
        "",
        "CPU ms by process: per frame while the clip ran, and per second of the idle app",
        "(all processes of a name summed):",
        "",
    ]
    lines += ["| process | " + " | ".join(f"{side} px" for side in cpu) + " | idle, per s |"]
    lines += ["| --- | " + " | ".join("---:" for _ in cpu) + " | ---: |"]
    names = list(next(iter(cpu.values()))) if cpu else []
    for name in names:
        values = " | ".join(f"{cpu[side].get(name, 0.0):.1f}" for side in cpu)
        lines.append(f"| {name} | {values} | {idle.get(name, 0.0):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
