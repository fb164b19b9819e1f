"""Ray's processes on this machine, read from /proc: names, resident memory, CPU time."""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def ray_processes() -> dict[int, str]:
    """pid -> name of every Ray process on this machine (workers show as `ray::<actor>`)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        first = argv[0].decode(errors="replace")
        if first.startswith("ray::"):  # ray::Actor, or ray::Actor.method while it runs one
            found[int(entry.name)] = first.split()[0].split(".")[0]
        elif any(part in first for part in ("raylet", "gcs_server")) or any(
            b"ray/_private" in a or b"ray/dashboard" in a or b"ray/autoscaler" in a for a in argv
        ):
            script = next((a.decode() for a in argv[1:] if a.endswith(b".py")), first)
            found[int(entry.name)] = (
                Path(script).name if script.endswith(".py") else Path(first).name
            )
    return found


def rss_mib(pid: int) -> float | None:
    """Resident memory of `pid` in MiB, None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds `pid` has used so far, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime, stime


def thread_cpu_s(pid: int) -> dict[int, float]:
    """User + system CPU seconds of each thread of `pid` so far, by thread id."""
    spent = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        spent[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS_PER_S
    return spent


def thread_name(pid: int, tid: int) -> str:
    """The kernel's name of a thread (Ray's C++ threads name themselves: worker.io, ...)."""
    try:
        return (Path(f"/proc/{pid}/task/{tid}/comm")).read_text().strip()
    except OSError:
        return "gone"


CpuSnapshot = dict[int, tuple[str, float | None]]


def cpu_snapshot() -> CpuSnapshot:
    """CPU seconds so far of every Ray process and of this one (the load generator)."""
    procs = ray_processes() | {os.getpid(): "load generator (this process)"}
    return {pid: (name, cpu_s(pid)) for pid, name in procs.items()}


def cpu_ms_since(before: CpuSnapshot, per: int = 1) -> dict[str, float]:
    """CPU ms since `before` by process (replicas of one name summed), divided by `per`."""
    spent: dict[str, float] = {}
    for pid, (name, then) in before.items():
        now = cpu_s(pid)
        if now is not None and then is not None:
            spent[name] = spent.get(name, 0.0) + (now - then) * 1e3 / max(per, 1)
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))
