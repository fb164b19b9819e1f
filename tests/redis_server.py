"""A real `redis-server` (Debian's package) on a free port, which tests start, kill and restart."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks.common import free_port

REDIS_SERVER = "/usr/bin/redis-server"


class RedisServer:
    """One redis-server process: no persistence, bounded memory with LRU eviction, as the
    README tells operators to run it."""

    def __init__(self, folder: Path, *, password: str | None = None, maxmemory: str = "64mb"):
        if shutil.which(REDIS_SERVER) is None:
            pytest.fail(f"{REDIS_SERVER} is missing: `make test` installs Debian's redis-server")
        self.folder = folder
        self.port = free_port()
        self.password = password
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, password: str | None = None) -> str:
        secret = password if password is not None else self.password
        return f"redis://{':' + secret + '@' if secret else ''}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        args += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "allkeys-lru"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """Gone at once, as a crash or a lost node is (not a clean shutdown)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """Stopped but connected: every call to it hangs, as an overloaded Redis does."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
