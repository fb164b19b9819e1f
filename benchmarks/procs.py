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
