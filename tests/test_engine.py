from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deployments.core.engine import Engine, choose_precision, gate_picture, psnr
from deployments.core.errors import StyleNotReady, UnknownStyle
from deployments.core.network import Generator
from deployments.core.settings import Settings
from deployments.core.weights import seeded_state_dict, write_seeded
from tests.conftest import smooth_picture
from tests.reference import reference_stylize

STATE = seeded_state_dict(11)


@pytest.fixture(scope="module")
def fp32_engine() -> Engine:
    network = Generator()
    network.load_state_dict(STATE)
    return Engine({"s": network}, precision="fp32")


def bf16_engine() -> Engine:
    network = Generator()
    network.load_state_dict(STATE)
    return Engine({"s": network}, precision="bf16")


def test_fp32_output_is_within_one_level_of_the_reference_port(fp32_engine: Engine) -> None:
    picture = smooth_picture(72, 56)
    (ours,) = fp32_engine.run("s", [picture])
    expected = reference_stylize(STATE, picture)
    assert ours.shape == picture.shape and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1


def test_a_batch_gives_the_same_pictures_as_one_at_a_time(fp32_engine: Engine) -> None:
    pictures = [smooth_picture(40, 32, seed=i) for i in range(3)]
    batched = fp32_engine.run("s", pictures)
    singles = [fp32_engine.run("s", [p])[0] for p in pictures]
    for a, b in zip(batched, singles, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("height, width", [(1, 1), (3, 7), (1, 300), (9, 8)])
def test_tiny_and_strip_images_come_back_at_their_own_size(
    fp32_engine: Engine, height: int, width: int
) -> None:
    (out,) = fp32_engine.run("s", [smooth_picture(width, height)])
    assert out.shape == (height, width, 3)


def test_runs_are_deterministic(fp32_engine: Engine) -> None:
    picture = smooth_picture(33, 45)
    assert np.array_equal(fp32_engine.run("s", [picture])[0], fp32_engine.run("s", [picture])[0])


def test_a_run_may_borrow_threads_and_gives_them_back(fp32_engine: Engine) -> None:
    picture = smooth_picture(64, 48)
    before = torch.get_num_threads()
    (usual,) = fp32_engine.run("s", [picture])
    (wider,) = fp32_engine.run("s", [picture], threads=before + 1)
    assert torch.get_num_threads() == before
    assert np.abs(usual.astype(int) - wider.astype(int)).max() <= 1


def test_batch_timing_gives_each_size_a_time_per_image_and_stops_timing_slow_ones(
    fp32_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed = fp32_engine.time_batches([1, 2, 4], side=32, rounds=2)
    assert list(timed) == [1, 2, 4] and all(t > 0 for t in timed.values())
    runs: list[int] = []
    run = fp32_engine.run

    def counted(style: str, batch: list[np.ndarray]) -> list[np.ndarray]:
        runs.append(len(batch))
        return run(style, batch)

    monkeypatch.setattr(fp32_engine, "run", counted)
    fp32_engine.time_batches([1, 2], side=32, rounds=3, tolerance=10)
    assert runs == [1, 2, 1, 2, 1, 2]  # one timed run per size and round
    runs.clear()
    fp32_engine.time_batches([1, 2], side=32, rounds=3, tolerance=0.5)  # every size "too slow"
    assert runs == [1, 2]


def test_bf16_passes_the_quality_gate_against_fp32(fp32_engine: Engine) -> None:
    picture = gate_picture(96)
    (fp32,) = fp32_engine.run("s", [picture])
    (bf16,) = bf16_engine().run("s", [picture])
    assert 40 <= psnr(fp32, bf16) < float("inf")


def test_an_explicit_precision_is_taken_as_given() -> None:
    assert choose_precision("fp32", Generator()) == ("fp32", "fp32 requested by settings")


def test_auto_precision_decides_by_measurement_and_says_why() -> None:
    network = Generator()
    network.load_state_dict(STATE)
    precision, reason = choose_precision("auto", network)
    assert precision in ("fp32", "bf16")
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert "PSNR" in reason and "ms" in reason


def test_unknown_and_unready_styles_are_typed_errors(tmp_path: Path) -> None:
    write_seeded(tmp_path, ["paprika"])
    (tmp_path / "celeba_distill.pt").write_bytes(b"not a state dict")
    settings = Settings(
        weights_dir=tmp_path,
        precision="fp32",
        styles=["paprika", "celeba_distill"],
        default_size=16,
    )
    engine = Engine.load(settings)
    assert engine.ready_styles == ["paprika"]
    status = engine.statuses["celeba_distill"]
    assert not status.ready and "not a readable state_dict" in str(status.error)
    with pytest.raises(StyleNotReady, match="celeba_distill"):
        engine.run("celeba_distill", [smooth_picture(16, 16)])
    with pytest.raises(UnknownStyle):
        engine.run("nope", [smooth_picture(16, 16)])


def test_load_reports_each_styles_weights_identity(seeded_weights_dir: Path) -> None:
    settings = Settings(weights_dir=seeded_weights_dir, precision="fp32", default_size=16)
    engine = Engine.load(settings)
    assert engine.ready_styles == [
        "celeba_distill",
        "face_paint_512_v1",
        "face_paint_512_v2",
        "paprika",
    ]
    sha1s = {status.sha1 for status in engine.statuses.values()}
    assert len(sha1s) == 4 and not any(s.verified for s in engine.statuses.values())


def test_the_engine_leaves_the_callers_network_untouched() -> None:
    network = Generator()
    network.load_state_dict(STATE)
    Engine({"s": network}, precision="bf16")
    assert next(network.parameters()).dtype == torch.float32
