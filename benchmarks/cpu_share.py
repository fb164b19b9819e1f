"""Where a command's CPU time goes: the CPU seconds of the command and of every Ray process on
this machine while it runs, by name (`ray::<actor or task>`, Ray's daemons). /proc is read once
a second, so a process that lives less than a second can be missed.

Usage: python -m benchmarks.cpu_share -- animegan-serve convert SRC DST --size 256
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict

from benchmarks.procs import cpu_s, ray_processes


def main() -> None:
    command = sys.argv[1:]
    if command[:1] == ["--"]:
        command = command[1:]
    before = {pid: cpu_s(pid) or 0.0 for pid in ray_processes()}
    start = time.perf_counter()
    child = subprocess.Popen(command)
    last: dict[int, tuple[str, float]] = {}
    while child.poll() is None:
        names = ray_processes() | {child.pid: "the command (Ray's driver)"}
        for pid, name in names.items():
            seconds = cpu_s(pid)
            if seconds is not None:
                last[pid] = (name, seconds - before.get(pid, 0.0))
        time.sleep(1)
    wall = time.perf_counter() - start
    shares: defaultdict[str, float] = defaultdict(float)
    for name, seconds in last.values():
        shares[name] += seconds
    total = sum(shares.values())
    print(f"{wall:.1f} s wall, {total:.1f} CPU-seconds, {os.cpu_count()} CPUs", file=sys.stderr)
    for name, seconds in sorted(shares.items(), key=lambda share: -share[1]):
        print(f"{seconds:8.1f} s {seconds / total:4.0%}  {name}", file=sys.stderr)
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
