"""An LRU store of encoded results, bounded in bytes (a value's `len`), with an optional TTL."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sized
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

V = TypeVar("V", bound=Sized)


@dataclass
class StoreCounters:
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0


class ResultStore(Generic[V]):
    """key -> value, least recently used first out once `max_bytes` would be exceeded."""

    def __init__(
        self,
        max_bytes: int,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.clock = clock
        self.counters = StoreCounters()
        self._items: OrderedDict[str, tuple[V, float]] = OrderedDict()

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is not None and self.ttl_s is not None and self.clock() - item[1] > self.ttl_s:
            self._drop(key)
            item = None
        if item is None:
            self.counters.misses += 1
            return None
        self._items.move_to_end(key)
        self.counters.hits += 1
        return item[0]

    def put(self, key: str, value: V) -> None:
        if len(value) > self.max_bytes:
            return  # would evict everything and still not fit
        if key in self._items:
            self._drop(key)
        while self._items and self.counters.bytes + len(value) > self.max_bytes:
            self._drop(next(iter(self._items)))
            self.counters.evictions += 1
        self._items[key] = (value, self.clock())
        self.counters.entries += 1
        self.counters.bytes += len(value)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def _drop(self, key: str) -> None:
        value, _ = self._items.pop(key)
        self.counters.entries -= 1
        self.counters.bytes -= len(value)

    def stats(self) -> dict[str, int]:
        return asdict(self.counters)
