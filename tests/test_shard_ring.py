"""Consistent hashing of cache keys across shards."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from deployments.core.shard_ring import ShardRing

KEYS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]


def test_one_shard_holds_everything() -> None:
    assert {ShardRing(1).shard_of(key) for key in KEYS} == {0}


@pytest.mark.parametrize("shards", [2, 3, 4, 8])
def test_keys_spread_about_evenly(shards: int) -> None:
    ring = ShardRing(shards)
    counts = Counter(ring.shard_of(key) for key in KEYS)
    assert set(counts) == set(range(shards))
    share = len(KEYS) / shards
    assert all(abs(count - share) < 0.25 * share for count in counts.values()), counts


def test_a_new_shard_takes_its_share_and_moves_no_other_key() -> None:
    before, after = ShardRing(3), ShardRing(4)
    moved = [key for key in KEYS if before.shard_of(key) != after.shard_of(key)]
    assert all(after.shard_of(key) == 3 for key in moved)  # only to the new shard
    assert 0.15 < len(moved) / len(KEYS) < 0.35  # about a quarter


def test_the_same_key_always_goes_to_the_same_shard() -> None:
    assert [ShardRing(4).shard_of(k) for k in KEYS[:50]] == [
        ShardRing(4).shard_of(k) for k in KEYS[:50]
    ]


def test_no_shards_is_refused() -> None:
    with pytest.raises(ValueError):
        ShardRing(0)
