"""Video through the service against the bare engine, in one run: a 10 s clip (a pan across one
of the shared photos, with a tone) at 256 px and at 512 px, square frames so that each frame is
the bare engine's picture.

- bare: the engine alone, 2 processes x 1 thread (the app's two model replicas), images/s;
- served: the clip as a job through HTTP (`serve_config.yaml`'s app), frames/s from upload to
  the result fetched (decoding, the line, the model replicas, encoding and the cache included),
  and the seconds from the upload to a playable result.

Writes the "video" section of benchmarks/RESULTS.md.
Usage: python -m benchmarks.video [--seconds 10] [--fps 24]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
from PIL import Image

from benchmarks.bare import measure
from benchmarks.common import PHOTOS, ROOT, deploy_ours, machine, start_cluster, stop_cluster
from benchmarks.report import replace_section

SIDES = (256, 512)


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
    """(seconds from the upload to the result fetched, of those until it started, frames)."""
    start = time.monotonic()
    job = httpx.post(
        f"{url}/v1/jobs", content=data, params={"style": "paprika", "size": side}, timeout=60
    ).json()
    started = None
    while job["status"] not in ("done", "failed"):
        time.sleep(0.1)
        job = httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=10).json()
        if started is None and job["status"] != "queued":
            started = time.monotonic() - start
    assert job["status"] == "done", job
    result = httpx.get(url + job["result"], timeout=60)
    elapsed = time.monotonic() - start
    with av.open(io.BytesIO(result.content), "r") as container:
        frames = sum(1 for _ in container.decode(video=0))
    return elapsed, started or 0.0, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=24)
    options = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    cells = [(p, side, 1) for p in ("fp32", "bf16") for side in SIDES]
    bare: dict[int, float] = {}
    for result in measure(cells, processes=2, threads=1, seconds=4.0):
        best = bare.get(result.side, 0.0)
        bare[result.side] = max(best, result.images_per_s)  # the app takes the faster precision
        print(f"  bare 2x1 {result.precision} {result.side}px: {result.images_per_s:.2f} img/s")
    clips = {side: clip(side, options.seconds, options.fps) for side in SIDES}

    from deployments.core.settings import OFFICIAL_STYLES
    from deployments.core.weights import write_seeded

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        weights_dir = Path(folder)
        write_seeded(weights_dir, list(OFFICIAL_STYLES))
        url = start_cluster()
        try:
            deploy_ours(url, weights_dir)
            for side in SIDES:
                elapsed, started, frames = served(url, clips[side], side)
                rate = frames / elapsed
                rows.append((side, frames, bare[side], rate, elapsed, started))
                print(
                    f"  served {side}px: {frames} frames in {elapsed:.1f} s = {rate:.2f} frames/s "
                    f"({rate / bare[side]:.0%} of bare {bare[side]:.2f} img/s)",
                    flush=True,
                )
        finally:
            stop_cluster()
    text = report(rows, options.seconds, options.fps)
    path = ROOT / "benchmarks" / "RESULTS.md"
    path.write_text(replace_section(path.read_text(), "video", text))
    print(text)


def report(
    rows: list[tuple[int, int, float, float, float, float]], seconds: float, fps: int
) -> str:
    lines = [
        "## Video (`python -m benchmarks.video`, part of `make bench`)",
        "",
        f"Machine: {machine()}. A {seconds:g} s clip at {fps} fps (H.264 + AAC, square frames)",
        "as one job through HTTP on `serve_config.yaml`'s app, against the bare engine",
        "(2 processes x 1 thread, the faster precision) in the same run.",
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
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
