from __future__ import annotations

from deployments.core.cache_key import cache_key
from deployments.core.options import StylizeOptions
from deployments.core.result_store import ResultStore
from deployments.core.settings import Settings


def test_least_recently_used_results_go_first_when_bytes_run_out() -> None:
    store: ResultStore[bytes] = ResultStore(max_bytes=10)
    store.put("a", b"1234")
    store.put("b", b"1234")
    assert store.get("a") == b"1234"  # a is now the most recent
    store.put("c", b"1234")
    assert "b" not in store and "a" in store and "c" in store
    assert store.stats() == {"entries": 2, "bytes": 8, "hits": 1, "misses": 0, "evictions": 1}


def test_a_value_larger_than_the_whole_store_is_not_kept() -> None:
    store: ResultStore[bytes] = ResultStore(max_bytes=4)
    store.put("a", b"12")
    store.put("big", b"12345")
    assert "big" not in store and store.get("a") == b"12"


def test_entries_expire_after_their_time_to_live() -> None:
    now = [0.0]
    store: ResultStore[bytes] = ResultStore(max_bytes=100, ttl_s=10, clock=lambda: now[0])
    store.put("a", b"x")
    now[0] = 5
    assert store.get("a") == b"x"
    now[0] = 16
    assert store.get("a") is None
    assert store.stats()["entries"] == 0 and store.stats()["misses"] == 1


def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    store: ResultStore[bytes] = ResultStore(max_bytes=100)
    store.put("a", b"xx")
    store.put("a", b"xxxx")
    assert store.stats()["bytes"] == 4 and store.stats()["entries"] == 1


def test_the_cache_key_covers_bytes_options_and_weights() -> None:
    settings = Settings()
    png = StylizeOptions.parse({"style": "paprika"}, settings)
    jpeg = StylizeOptions.parse({"style": "paprika", "format": "jpeg"}, settings)
    base = cache_key(b"image", png, "w1")
    assert base == cache_key(b"image", png, "w1")
    assert (
        len(
            {
                base,
                cache_key(b"imagf", png, "w1"),
                cache_key(b"image", jpeg, "w1"),
                cache_key(b"image", png, "w2"),
            }
        )
        == 4
    )


def test_the_cache_key_covers_the_face_style_and_its_weights() -> None:
    settings = Settings()
    plain = StylizeOptions.parse({"style": "paprika"}, settings)
    faces = StylizeOptions.parse({"style": "paprika", "face_style": "celeba_distill"}, settings)
    other = StylizeOptions.parse({"style": "paprika", "face_style": "face_paint_512_v1"}, settings)
    keys = {
        cache_key(b"image", plain, "w1"),
        cache_key(b"image", faces, "w1", "f1"),
        cache_key(b"image", faces, "w1", "f2"),
        cache_key(b"image", other, "w1", "f1"),
    }
    assert len(keys) == 4
