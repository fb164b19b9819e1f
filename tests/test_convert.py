"""`convert`'s steps as plain Python, without a cluster: the listing, decoding (and taking
results from a real Redis), atomic writes, its report and the command's refusals. The whole
pipeline runs on two nodes in tests/multinode.py."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments.convert import (
    Library,
    Report,
    clear_partial,
    decode_batch,
    listing,
    write_atomically,
)
from deployments.core import pipeline
from deployments.core.cache_key import cache_key
from deployments.core.imaging import Cut
from deployments.core.options import StylizeOptions
from deployments.core.redis_tier import RedisTier
from deployments.core.results import Picture
from deployments.core.settings import Settings
from tests.conftest import jpeg_bytes, smooth_picture
from tests.redis_server import RedisServer
from tests.test_cli import cli

SHA1 = "0" * 40  # the weights' identity in the keys: any value will do without an engine


def make_library(tmp_path: Path, settings: Settings, redis_url: str | None = None) -> Library:
    options = StylizeOptions.build(settings, style="paprika", size=64)
    return Library(tmp_path / "src", tmp_path / "dst", options, settings, SHA1, redis_url)


def put(folder: Path, name: str, data: bytes = b"") -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)


def test_the_listing_walks_folder_by_folder_keeping_odd_names(
    tmp_path: Path, settings: Settings
) -> None:
    library = make_library(tmp_path, settings)
    for name in ["b.jpg", "a.png", "sp ace/é 1.JPG", "日本/写真.webp", "x/y/z.tif", "notes.txt"]:
        put(library.source, name)
    for hidden in [".hidden.jpg", ".cache/c.jpg"]:
        put(library.source, hidden)
    rows = list(listing(library))
    assert [row["source"] for row in rows] == [
        "a.png",
        "b.jpg",
        "sp ace/é 1.JPG",
        "x/y/z.tif",
        "日本/写真.webp",
    ]
    assert {row["state"] for row in rows} == {"todo"}


def test_the_listing_skips_done_files_and_leaves_out_a_target_inside_the_source(
    tmp_path: Path, settings: Settings
) -> None:
    library = make_library(tmp_path, settings)
    library = Library(
        library.source, library.source / "anime", library.options, settings, SHA1, None
    )
    put(library.source, "done.jpg")
    put(library.source, "new.jpg")
    put(library.target, "done.png", b"a finished result")
    put(library.target, "sub/result.jpg")  # inside the target: never a source
    rows = {row["source"]: row["state"] for row in listing(library)}
    assert rows == {"done.jpg": "skipped", "new.jpg": "todo"}


def test_two_files_with_one_result_name_fail_the_second(tmp_path: Path, settings: Settings) -> None:
    library = make_library(tmp_path, settings)
    for name in ["a/photo.jpg", "a/photo.png", "b/photo.jpg"]:  # b's result is another folder's
        put(library.source, name)
    rows = {row["source"]: row for row in listing(library)}
    assert [rows[name]["state"] for name in rows] == ["todo", "failed", "todo"]
    assert rows["a/photo.png"]["code"] == "bad_parameter"
    assert "a/photo.jpg is written to" in rows["a/photo.png"]["message"]


def decode(library: Library, *rows: tuple[str, str]) -> list[dict]:
    """decode_batch on rows of (source, state), as Ray Data hands it a numpy batch."""
    batch = {
        "source": np.array([source for source, _ in rows], dtype=object),
        "state": np.array([state for _, state in rows], dtype=object),
        "code": np.array([""] * len(rows), dtype=object),
        "message": np.array([""] * len(rows), dtype=object),
    }
    (library.target / ".partial").mkdir(parents=True, exist_ok=True)  # as the driver does
    out = decode_batch(batch, library)
    return [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]


def test_decoding_gives_the_services_pixels_and_key_and_fails_bad_files_alone(
    tmp_path: Path, settings: Settings
) -> None:
    library = make_library(tmp_path, settings)
    photo = jpeg_bytes(smooth_picture(120, 80, seed=3))
    frames = [Image.new("RGB", (16, 16), (i * 60, 0, 0)) for i in range(3)]
    animation = io.BytesIO()
    frames[0].save(animation, "GIF", save_all=True, append_images=frames[1:])
    put(library.source, "good.jpg", photo)
    put(library.source, "bad.jpg", b"not a picture")
    put(library.source, "moving.gif", animation.getvalue())
    good, bad, gone, moving, skipped = decode(
        library,
        ("good.jpg", "todo"),
        ("bad.jpg", "todo"),
        ("gone.jpg", "todo"),  # listed, then removed before it was read
        ("moving.gif", "todo"),
        ("done.jpg", "skipped"),
    )
    pixels, cut = pipeline.decode_upload(photo, library.options, settings)
    assert good["state"] == "todo" and good["key"] == cache_key(photo, library.options, SHA1)
    assert (good["height"], good["width"], good["cut"]) == (*pixels.shape[:2], cut.header())
    assert good["pixels"] == pixels.tobytes()
    assert (bad["state"], bad["code"]) == ("failed", "unsupported_format")
    assert (gone["state"], gone["code"]) == ("failed", "file_error")
    assert (moving["state"], moving["code"]) == ("failed", "unsupported_format")
    assert skipped["state"] == "skipped" and skipped["pixels"] == b""


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


def test_a_result_already_in_redis_is_written_instead_of_computed(
    tmp_path: Path, settings: Settings, redis_server: RedisServer
) -> None:
    library = make_library(tmp_path, settings, redis_server.url())
    photo = jpeg_bytes(smooth_picture(120, 80, seed=4))
    put(library.source, "warm.jpg", photo)
    put(library.source, "cold.jpg", jpeg_bytes(smooth_picture(120, 80, seed=5)))
    stored = Picture(b"the service's result", Cut.parse("none 0,0,120,80"))

    async def store() -> None:
        tier = RedisTier.for_settings(settings, redis_server.url())
        await tier.put(cache_key(photo, library.options, SHA1), stored)
        await tier.close()

    asyncio.run(store())
    warm, cold = decode(library, ("warm.jpg", "todo"), ("cold.jpg", "todo"))
    assert warm["state"] == "cached" and warm["pixels"] == b""
    assert (library.target / "warm.png").read_bytes() == stored.body
    assert cold["state"] == "todo" and cold["pixels"]  # a miss: decoded for the pool
    assert list((library.target / ".partial").iterdir()) == []


def test_an_atomic_write_leaves_a_whole_file_or_none(tmp_path: Path) -> None:
    partial = tmp_path / ".partial"
    partial.mkdir()
    write_atomically(tmp_path / "a" / "b.png", b"whole", partial)
    assert (tmp_path / "a" / "b.png").read_bytes() == b"whole"
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(OSError):  # its folder would be a file
        write_atomically(tmp_path / "file" / "c.png", b"never", partial)
    assert list(partial.iterdir()) == []
    (partial / "left.png").write_bytes(b"half")  # as a killed writer leaves it
    clear_partial(partial)
    assert sorted(tmp_path.iterdir()) == [tmp_path / "a", tmp_path / "file"]
    with pytest.raises(FileNotFoundError):  # a late writer after a Ctrl-C writes nothing
        write_atomically(tmp_path / "a" / "d.png", b"late", partial)
    assert not (tmp_path / "a" / "d.png").exists()


def test_the_report_gives_the_pace_after_the_start_up() -> None:
    report = Report(first_s=10.0, last_s=20.0, elapsed_s=21.0)
    report.summary.done = 51
    report.nodes = {"a", "b"}
    assert report.steady_rate() == 5.0
    assert report.line() == ("5.00 images/s after a start-up of 10.0 s (2.43 overall) on 2 node(s)")
    assert Report().line() == ""  # nothing converted: no pace to tell


def test_convert_refuses_bad_options_before_starting_ray(
    tmp_path: Path, seeded_weights_dir: Path
) -> None:
    env = {"ANIMEGAN_WEIGHTS_DIR": str(seeded_weights_dir)}
    (tmp_path / "src").mkdir()
    source, target = str(tmp_path / "src"), str(tmp_path / "dst")
    unknown = cli("convert", source, target, "--style", "nope", env=env)
    assert unknown.returncode == 2 and "unknown style 'nope'" in unknown.stderr
    down = cli("convert", source, target, "--redis", "redis://127.0.0.1:1/0", env=env)
    assert down.returncode == 2 and "--redis redis://127.0.0.1:1/0" in down.stderr
    video = cli("convert", source, target, "--format", "mp4", env=env)
    assert video.returncode == 2 and "'mp4' is not one of" in video.stderr
    missing = cli("convert", str(tmp_path / "nowhere"), target, env=env)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "dst").exists()
