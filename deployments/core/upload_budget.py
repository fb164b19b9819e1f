"""The bytes of uploads one ingress replica reads and holds at once, bounded.

Thousands of requests may be open on one replica (jobs' event streams are cheap); uploads of
20 MiB are not. Each upload route reserves its request's declared size (`Content-Length`, or
the upload limit when it declares none) before reading a byte of it, and gives it back when it
has answered; a request that would pass the budget is refused at once, unread, with 503
`overloaded`: the memory of the replica stays within the budget however many clients send.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .errors import Overloaded

RETRY_AFTER_S = 1.0


class UploadBudget:
    """`reserve` an upload's bytes for as long as its request is worked on."""

    def __init__(self, max_bytes: int, *, max_upload_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        self.used = 0
        self.refused = 0

    @contextlib.contextmanager
    def reserve(self, declared: int | None) -> Iterator[None]:
        need = self.max_upload_bytes if declared is None else min(declared, self.max_upload_bytes)
        if self.used and self.used + need > self.max_bytes:  # one upload always fits
            self.refused += 1
            raise Overloaded(
                "this replica is reading as many uploads as it holds at once; retry shortly",
                retry_after_s=RETRY_AFTER_S,
            )
        self.used += need
        try:
            yield
        finally:
            self.used -= need
