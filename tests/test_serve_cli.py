"""The `animegan-serve` command against the running service, as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from benchmarks.common import free_port
from tests.conftest import SHARED_PHOTOS, Service, jpeg_bytes, smooth_picture
from tests.test_cli import cli

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def twenty_photos(tmp_path: Path) -> Path:
    """20 distinct crops of the real photos, spread over nested folders."""
    sources = sorted(SHARED_PHOTOS.glob("*.jpg"))
    pictures = [Image.open(p).convert("RGB") for p in sources] or [
        Image.fromarray(smooth_picture(900, 700))
    ]
    root = tmp_path / "album"
    for i in range(20):
        picture = pictures[i % len(pictures)]
        crop = picture.crop((i * 17, i * 11, i * 17 + 320, i * 11 + 240))
        folder = root / ["", "2024", "2024/kyoto"][i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"photo{i:02d}.jpg", quality=90)
    return root


def test_a_folder_of_20_photos_converts_with_progress_and_a_true_summary(
    service: Service, twenty_photos: Path, tmp_path: Path
) -> None:
    out = tmp_path / "anime"
    args = (
        "stylize",
        str(twenty_photos),
        "--recursive",
        "-o",
        str(out),
        "--url",
        service.url,
        "--style",
        "paprika",
        "--size",
        "128",
        "-j",
        "4",
    )
    first = cli(*args, env={"TTY_COMPATIBLE": "1"})  # the progress bar, as in a terminal
    assert first.returncode == 0, first.stderr
    assert "20/20" in first.stderr and "files/s" in first.stderr
    assert "running" in first.stderr  # the jobs' statuses, as the server's line reports them
    assert f"20 done, 0 skipped, 0 failed, 0 cached; results in {out}" in first.stderr
    written = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    expected = sorted(
        p.relative_to(twenty_photos).with_suffix(".png") for p in twenty_photos.rglob("*.jpg")
    )
    assert written == expected and len(written) == 20
    with Image.open(out / "2024/kyoto/photo02.png") as picture:
        assert picture.size == (128, 96)

    skipped = cli(*args, "--skip-existing")
    assert "0 done, 20 skipped, 0 failed, 0 cached" in skipped.stderr
    again = cli(*args)
    assert "20 done, 0 skipped, 0 failed, 20 cached" in again.stderr


def test_without_recursive_only_the_folders_own_files_are_taken(
    service: Service, twenty_photos: Path, tmp_path: Path
) -> None:
    result = cli(
        "stylize",
        str(twenty_photos),
        "-o",
        str(tmp_path / "out"),
        "--url",
        service.url,
        "--size",
        "32",
    )
    assert result.returncode == 0, result.stderr
    assert "7 done" in result.stderr
    assert not (tmp_path / "out" / "2024").exists()


def test_a_bad_file_is_named_counted_and_sets_the_exit_code(
    service: Service, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"p{i}.jpg").write_bytes(jpeg_bytes(smooth_picture(96, 64, seed=400 + i)))
    (folder / "bad.png").write_bytes(b"not a png at all")
    out = tmp_path / "out"
    result = cli(
        "stylize",
        str(folder),
        "-o",
        str(out),
        "--url",
        service.url,
        "--size",
        "32",
        "--style",
        "paprika",
        "-j",
        "3",
    )
    assert result.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    assert f"{folder / 'bad.png'}: unsupported_format:" in result.stderr
    assert "3 done, 0 skipped, 1 failed, 0 cached" in result.stderr


def test_styles_lists_the_servers_styles(service: Service) -> None:
    result = cli("styles", "--url", service.url)
    assert result.returncode == 0, result.stderr
    for name in ("celeba_distill", "face_paint_512_v1", "face_paint_512_v2", "paprika"):
        assert name in result.stdout
    assert "not the official file" in result.stdout  # the tests' weights are seeded stand-ins


def test_stats_prints_readable_tables(service: Service) -> None:
    result = cli("stats", "--url", service.url)
    assert result.returncode == 0, result.stderr
    for heading in ("cluster cache", "this ingress replica", "model replicas", "batch cap"):
        assert heading in result.stdout
    assert "{" not in result.stdout  # tables, not JSON


def test_cli_refuses_a_style_the_server_does_not_have(service: Service, tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(smooth_picture(96, 64, seed=410)))
    result = cli(
        "stylize",
        str(tmp_path / "a.jpg"),
        "-o",
        str(tmp_path),
        "--url",
        service.url,
        "--style",
        "nope",
    )
    assert result.returncode == 2 and "unknown style 'nope'" in result.stderr


def test_cli_says_so_when_no_server_is_running(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(smooth_picture(96, 64, seed=411)))
    unused = f"http://127.0.0.1:{free_port()}"
    result = cli("stylize", str(tmp_path / "a.jpg"), "-o", str(tmp_path), "--url", unused)
    assert result.returncode == 1 and "cannot reach animegan-serve" in result.stderr
    assert "cannot reach animegan-serve" in cli("stats", "--url", unused).stderr


def test_warm_leaves_every_picture_cached_in_each_style(service: Service, tmp_path: Path) -> None:
    import httpx

    folder = tmp_path / "examples"
    folder.mkdir()
    pictures = [jpeg_bytes(smooth_picture(80, 60, seed=7700 + i)) for i in range(2)]
    for i, data in enumerate(pictures):
        (folder / f"example{i}.jpg").write_bytes(data)
    (folder / "notes.txt").write_text("not a picture: left alone")
    args = ("warm", str(folder), "--url", service.url, "--style", "paprika", "--size", "64")
    first = cli(*args, "--style", "celeba_distill")
    assert first.returncode == 0, first.stderr
    assert "4 warmed, 0 already cached, 0 failed" in first.stderr
    for data in pictures:  # the same request as warming made: a hit
        answer = httpx.post(
            f"{service.url}/v1/stylize",
            content=data,
            params={"style": "paprika", "size": 64},
            timeout=60,
        )
        assert answer.headers["x-cache"] == "hit"
    again = cli(*args)
    assert "0 warmed, 2 already cached, 0 failed" in again.stderr
    unknown = cli("warm", str(folder), "--url", service.url, "--style", "nope")
    assert unknown.returncode == 2 and "unknown style" in unknown.stderr
