"""Which cache shard holds a key: consistent hashing, so adding a shard moves few keys.

Each shard owns `POINTS` places on a ring of 64-bit hashes; a key belongs to the first place at
or after its own hash. Going from n to n + 1 shards moves about 1 / (n + 1) of the keys, all of
them to the new shard; the others keep their results.
"""

from __future__ import annotations

import bisect
import hashlib

POINTS = 128  # places per shard: shares within a few percent of even


class ShardRing:
    """key -> shard index in [0, shards)."""

    def __init__(self, shards: int) -> None:
        if shards < 1:
            raise ValueError("a ring needs at least one shard")
        self.shards = shards
        places = sorted(
            (_hash(f"shard-{shard}-{point}"), shard)
            for shard in range(shards)
            for point in range(POINTS)
        )
        self._hashes = [place for place, _ in places]
        self._owners = [shard for _, shard in places]

    def shard_of(self, key: str) -> int:
        if self.shards == 1:
            return 0
        at = bisect.bisect_left(self._hashes, _hash(key)) % len(self._hashes)
        return self._owners[at]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
