"""`make profile`: where the CPU of a miss goes, by process and by thread.

All misses at 8 clients, 256 px, for `--seconds`, with py-spy attached to our replicas: it names
each thread (Ray renames them all `ray::IDLE`) and samples what Python runs there. Prints CPU
ms per answered request by process, then by thread within our replicas, and what share of the
model replicas' inference thread is spent in `Engine.run`.
Usage: python -m benchmarks.profile [--seconds 20]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

from benchmarks.common import Photos, served_app
from benchmarks.load import run_closed
from benchmarks.procs import (
    cpu_ms_since,
    cpu_snapshot,
    ray_processes,
    thread_cpu_s,
    thread_name,
)

REPLICAS = "ray::ServeReplica:animegan:"
THREAD = re.compile(r"thread \((\d+)\)(?:: ([^;]*))?")
POOL_THREAD = re.compile(r"_\d+$")


PY_SPY = Path(sys.executable).with_name("py-spy")  # `make profile` installs it


def spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` 100 times a second, raw stacks to `out`."""
    command = [str(PY_SPY), "record", "--nonblocking"]
    command += ["-r", "100", "-d", str(int(seconds)), "--format", "raw", "-t"]
    command += ["-o", str(out), "--pid", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_stacks(path: Path) -> list[tuple[int, str, list[str], int]]:
    """(thread id, thread name, frames, samples) for each line py-spy wrote."""
    rows = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        head, *frames = stack.split(";")
        named = THREAD.match(head)
        if named:
            rows.append((int(named[1]), named[2] or "", frames, int(count)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    options = parser.parse_args()
    with served_app() as (url, weights_dir):
        photos = Photos(seed=3)
        params: dict[str, str | int] = {"style": "paprika", "size": 256}

        def load(bodies: list[bytes], seconds: float) -> int:
            return run_closed(
                url,
                "/v1/stylize",
                lambda i: (bodies[i % len(bodies)], params),
                clients=8,
                max_requests=len(bodies),
                max_seconds=seconds,
            ).requests

        load(photos.unique(80), 8)  # warm up and reach the steady state
        replicas = {p: n for p, n in ray_processes().items() if n.startswith(REPLICAS)}
        before, threads = cpu_snapshot(), {pid: thread_cpu_s(pid) for pid in replicas}
        spies = {pid: weights_dir / f"{pid}.txt" for pid in replicas}
        if not PY_SPY.exists():
            print("py-spy is not installed (make profile installs it): threads unnamed")
        running = [
            spy(pid, options.seconds - 1, out) for pid, out in spies.items() if PY_SPY.exists()
        ]
        answered = load(photos.unique(int(options.seconds * 40)), options.seconds)
        spent = cpu_ms_since(before, answered)
        after = {pid: thread_cpu_s(pid) for pid in replicas}
        for process in running:
            process.wait()
        report(answered, options.seconds, spent, replicas, threads, after, spies)


def report(
    answered: int,
    seconds: float,
    spent: dict[str, float],
    replicas: dict[int, str],
    before: dict[int, dict[int, float]],
    after: dict[int, dict[int, float]],
    spies: dict[int, Path],
) -> None:
    print(f"{answered / seconds:.2f} req/s; CPU ms per request, {sum(spent.values()):.1f} in all")
    for name, ms in spent.items():
        if ms >= 0.1:
            print(f"  {ms:7.1f}  {name}")
    for pid, name in replicas.items():
        stacks = read_stacks(spies[pid]) if spies[pid].exists() else []
        names = {tid: thread for tid, thread, _, _ in stacks if thread}
        print(f"{name.removeprefix(REPLICAS)} (pid {pid}), by thread:")
        by_thread: dict[str, float] = defaultdict(float)
        for tid, seconds_before in before[pid].items():
            # Pools' threads summed (ThreadPoolExecutor-0_3 -> ThreadPoolExecutor-0); threads
            # without Python frames are Ray's own, named by the kernel (worker.io, ...).
            label = POOL_THREAD.sub("", names.get(tid) or f"{thread_name(pid, tid)} (Ray)")
            used = after[pid].get(tid, seconds_before) - seconds_before
            by_thread[label] += used * 1e3 / answered
        for label, ms in sorted(by_thread.items(), key=lambda item: -item[1]):
            if ms >= 0.1:
                print(f"  {ms:7.1f}  {label}")
        inference = Counter[bool]()
        for _, thread, frames, count in stacks:
            if "_run_user_code_event_loop" in thread:
                inference[any(f.startswith("Engine.run ") for f in frames)] += count
        if inference[True]:
            share = inference[True] / sum(inference.values())
            print(f"  user-code thread: {share:.1%} of its samples in Engine.run")


if __name__ == "__main__":
    main()
