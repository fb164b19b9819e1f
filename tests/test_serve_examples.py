"""`examples_dir`: the pictures are warmed at start-up, listed, and then answered from the cache."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import EXAMPLE_PICTURES

pytestmark = pytest.mark.timeout(600)


def warmed(url: str, timeout_s: float = 120) -> list[dict]:
    """`/v1/examples` once every example has its result."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed: list[dict] = httpx.get(f"{url}/v1/examples", timeout=10).json()
        if all(example["results"] for example in listed):
            return listed
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)


def test_examples_are_listed_warmed_and_answered_from_the_cache(examples_app: str) -> None:
    listed = warmed(examples_app)
    assert [example["name"] for example in listed] == sorted(EXAMPLE_PICTURES)  # no readme.txt
    for example in listed:
        original = httpx.get(examples_app.rsplit("/", 1)[0] + example["original"], timeout=10)
        assert original.content == EXAMPLE_PICTURES[example["name"]]
        assert original.headers["content-type"] == "image/jpeg"
        assert set(example["results"]) == {"paprika"}
        result = httpx.get(examples_app.rsplit("/", 1)[0] + example["results"]["paprika"])
        assert result.status_code == 200 and result.content.startswith(b"\x89PNG")
        # The same picture with the default options: a hit, with no inference.
        answer = httpx.post(f"{examples_app}/v1/stylize", content=original.content, timeout=60)
        assert answer.headers["x-cache"] == "hit" and answer.content == result.content
    missing = httpx.get(f"{examples_app}/v1/examples/readme.txt", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_example"
