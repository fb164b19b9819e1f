"""The `animegan-serve` command, run in-process with click's CliRunner (and once for real)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from deployments.cli import file_options, main
from deployments.core import errors, imaging, weights
from deployments.core.errors import UnknownStyle
from deployments.core.options import StylizeOptions
from deployments.core.settings import Settings
from tests.conftest import FileServer, jpeg_bytes, smooth_picture
from tests.portraits import PHOTO, corner
from tests.reference import reference_stylize

SCRIPT = Path(sys.executable).with_name("animegan-serve")


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str] | None = None) -> Ran:
    """`animegan-serve ARGS` in this process; a crash (not a clean exit) fails the test."""
    result = CliRunner(env=env).invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


def real_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, in its own process, as a user runs it."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ANIMEGAN_")}
    full_env.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=120
    )


@pytest.fixture
def inputs(tmp_path: Path, photo_bytes: bytes) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(photo_bytes)
    (folder / "small.jpg").write_bytes(jpeg_bytes(smooth_picture(96, 64)))
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    return folder


def test_the_console_script_stylizes_locally_like_the_reference_port_in_fp32(
    inputs: Path, tmp_path: Path, seeded_weights_dir: Path
) -> None:
    out = tmp_path / "out"
    result = real_cli(
        "stylize",
        str(inputs / "photo.jpg"),
        "--output-dir",
        str(out),
        "--style",
        "paprika",
        "--size",
        "256",
        "--local",
        env={"ANIMEGAN_WEIGHTS_DIR": str(seeded_weights_dir), "ANIMEGAN_PRECISION": "fp32"},
    )
    assert result.returncode == 0, result.stderr
    assert "1 done, 0 skipped, 0 failed, 0 cached" in result.stderr
    written = np.asarray(Image.open(out / "photo.png"))
    settings = Settings()
    prepared, _ = imaging.load(
        (inputs / "photo.jpg").read_bytes(), size=256, crop="none", max_pixels=settings.max_pixels
    )
    found = weights.inspect(weights.OFFICIAL["paprika"], seeded_weights_dir)
    assert found is not None
    state = weights.load_state_dict(found)
    expected = reference_stylize(state, prepared)
    assert written.shape == expected.shape
    assert np.abs(written.astype(int) - expected.astype(int)).max() <= 1


def test_stylize_a_folder_writes_the_good_files_and_names_each_bad_one(
    inputs: Path, tmp_path: Path, seeded_weights_dir: Path
) -> None:
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (inputs / "text.jpg").write_text("hello")
    out = tmp_path / "out"
    result = cli(
        "stylize",
        str(inputs),
        "--output-dir",
        str(out),
        "--size",
        "64",
        "--format",
        "jpeg",
        "--local",
        env={"ANIMEGAN_WEIGHTS_DIR": str(seeded_weights_dir)},
    )
    assert result.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg", "small.jpg"]
    reasons = [line for line in result.stderr.splitlines() if line.startswith(str(inputs))]
    assert sorted(reasons) == [
        f"{inputs / 'broken.png'}: invalid_image: "
        "the data starts like a PNG file but is not readable",
        f"{inputs / 'text.jpg'}: unsupported_format: not an image format we read; "
        "send JPEG, PNG, WebP, GIF, BMP or TIFF",
    ]
    assert f"2 done, 0 skipped, 2 failed, 0 cached; results in {out}" in result.stderr


def test_stylize_refuses_bad_options_before_loading_anything(inputs: Path, tmp_path: Path) -> None:
    result = cli("stylize", str(inputs), "-o", str(tmp_path), "--style", "nope", "--local")
    assert result.returncode == 2
    assert "unknown style 'nope'" in result.stderr


def test_a_face_style_is_the_server_s_and_must_be_a_style(inputs: Path, tmp_path: Path) -> None:
    local = cli("stylize", str(inputs), "-o", str(tmp_path), "--face-style", "paprika", "--local")
    assert local.returncode == 2 and "drop --local" in local.stderr
    settings = Settings()
    options_for = file_options(settings, "original", None, "none", None, None, "celeba_distill")
    assert options_for(Path("a.jpg")).face_style == "celeba_distill"
    with pytest.raises(UnknownStyle):  # a video's style cannot be the photo itself
        options_for(Path("a.mp4"))
    with pytest.raises(UnknownStyle, match="unknown face_style 'nope'"):
        file_options(settings, None, None, "none", None, None, "nope")


def test_stylize_refuses_two_inputs_that_would_write_the_same_file(
    inputs: Path, tmp_path: Path
) -> None:
    (inputs / "photo.png").write_bytes(b"")
    result = cli("stylize", str(inputs), "-o", str(tmp_path / "out"), "--local")
    assert result.returncode == 2
    assert (
        f"{inputs / 'photo.jpg'} and {inputs / 'photo.png'} would both be written" in result.stderr
    )
    assert not (tmp_path / "out").exists()


def test_every_command_explains_itself_with_an_example() -> None:
    for command in (
        [],
        ["weights"],
        ["weights", "list"],
        ["weights", "fetch"],
        ["weights", "verify"],
        ["weights", "seed"],
        ["stylize"],
        ["styles"],
        ["stats"],
    ):
        result = cli(*command, "--help")
        assert result.returncode == 0 and "Example:" in result.stdout, command


def test_weights_fetch_downloads_a_custom_style_and_verify_checks_pins(tmp_path: Path) -> None:
    data = tmp_path / "src.pt"
    weights.write_seeded(tmp_path, ["src"])
    body = data.read_bytes()
    with FileServer() as server:
        server.files["/mine.pt"] = body
        env = {
            "ANIMEGAN_WEIGHTS_DIR": str(tmp_path / "weights"),
            "ANIMEGAN_STYLES": '["mine"]',
            "ANIMEGAN_CUSTOM_STYLES": json.dumps(
                {"mine": {"source": server.url + "/mine.pt", "sha1": weights.git_blob_sha1(body)}}
            ),
        }
        assert "missing" in cli("weights", "list", env=env).stdout
        fetched = cli("weights", "fetch", env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "weights" / "mine.pt").read_bytes() == body
    verified = cli("weights", "verify", env=env)
    assert verified.returncode == 0 and verified.stdout.strip() == "mine: verified"


def test_weights_verify_fails_on_files_that_do_not_match_their_pins(
    seeded_weights_dir: Path,
) -> None:
    result = cli("weights", "verify", env={"ANIMEGAN_WEIGHTS_DIR": str(seeded_weights_dir)})
    assert result.returncode == 1
    assert "paprika: UNVERIFIED" in result.stdout


def test_weights_seed_writes_loadable_stand_ins(tmp_path: Path) -> None:
    result = cli("weights", "seed", "paprika", env={"ANIMEGAN_WEIGHTS_DIR": str(tmp_path)})
    assert result.returncode == 0 and "seeded stand-in" in result.stdout
    found = weights.inspect(weights.OFFICIAL["paprika"], tmp_path)
    assert found is not None
    assert weights.load_state_dict(found).keys() == weights.seeded_state_dict(0).keys()


def test_the_cli_imports_without_ray() -> None:
    code = "import sys, deployments.cli; assert 'ray' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.skipif(not PHOTO.exists(), reason=f"needs {PHOTO} (../shared)")
def test_crop_face_cuts_the_square_around_the_face(
    tmp_path: Path, seeded_weights_dir: Path
) -> None:
    portrait = corner()
    (tmp_path / "corner.jpg").write_bytes(portrait.data)
    out = tmp_path / "out"
    result = cli(
        "stylize",
        str(tmp_path / "corner.jpg"),
        "-o",
        str(out),
        "--style",
        "paprika",
        "--crop",
        "face",
        "--local",
        env={"ANIMEGAN_WEIGHTS_DIR": str(seeded_weights_dir)},
    )
    assert result.returncode == 0, result.stderr
    _, cut = imaging.load(portrait.data, size=512, crop="face", max_pixels=50_000_000)
    assert cut.how == "face"
    side = min(512, cut.box.width)
    with Image.open(out / "corner.png") as written:
        assert written.size == (side, side)


def test_warming_waits_until_nobody_waits_for_the_model(tmp_path: Path) -> None:
    from deployments.files import warm_all

    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "b.jpg").write_bytes(b"b")
    settings = Settings(styles=["paprika", "celeba_distill"])
    option_sets = [StylizeOptions.build(settings, style=s) for s in settings.styles]
    queued = iter([2, 1, 0, 0, 3, 0, 0, 0])  # what the line says each time it is asked
    events: list[str] = []

    def run(image: bytes, options: StylizeOptions) -> bool:
        events.append(f"run {image.decode()} {options.style}")
        if image == b"b" and options.style == "celeba_distill":
            raise errors.InvalidImage("broken")
        return image == b"a" and options.style == "paprika"  # that one was cached

    summary = warm_all(
        [tmp_path / "a.jpg", tmp_path / "b.jpg"],
        option_sets,
        run,
        lambda: next(queued),
        sleep=lambda s: events.append("wait"),
    )
    assert events == [
        "wait",
        "wait",
        "run a paprika",
        "run a celeba_distill",
        "wait",
        "run b paprika",
        "run b celeba_distill",
    ]
    assert summary.line() == "2 warmed, 1 already cached, 1 failed"
    assert "b.jpg (celeba_distill): invalid_image: broken" in summary.failures[0]
