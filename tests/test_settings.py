from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from deployments.core.settings import OFFICIAL_STYLES, Settings


def test_defaults_cover_the_four_official_styles() -> None:
    settings = Settings()
    assert settings.styles == list(OFFICIAL_STYLES)
    assert settings.weights_dir == Path.home() / ".cache/animegan-serve/weights"
    assert settings.precision == "auto"


def test_each_setting_is_overridden_by_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANIMEGAN_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("ANIMEGAN_PRECISION", "fp32")
    monkeypatch.setenv("ANIMEGAN_STYLES", '["paprika", "celeba_distill"]')
    monkeypatch.setenv("ANIMEGAN_MAX_BATCH_SIZE", "3")
    settings = Settings()
    assert settings.weights_dir == tmp_path
    assert settings.precision == "fp32"
    assert settings.styles == ["paprika", "celeba_distill"]
    assert settings.default_style == "paprika"  # the default one is not configured
    assert settings.max_batch_size == 3


def test_custom_styles_come_from_json_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "ANIMEGAN_CUSTOM_STYLES", '{"mine": {"source": "/data/mine.pt", "sha1": "ab"}}'
    )
    monkeypatch.setenv("ANIMEGAN_STYLES", '["mine"]')
    settings = Settings()
    assert settings.custom_styles["mine"].source == "/data/mine.pt"
    assert settings.default_style == "mine"


def test_serve_args_fill_the_model_but_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANIMEGAN_PRECISION", "fp32")
    settings = Settings(precision="bf16", max_batch_size=2)
    assert settings.precision == "fp32"
    assert settings.max_batch_size == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"precision": "fp64"},
        {"styles": ["nope"]},
        {"default_style": "paprika", "styles": ["celeba_distill"]},
        {"default_size": 5000},
        {"unknown_option": 1},
        {"cache_redis_url": "http://cache:6379"},
    ],
)
def test_invalid_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)


def test_the_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [name for name in Settings.model_fields if f"`{name}`" not in readme]
    assert missing == []


def test_the_redis_password_is_a_secret_in_every_printout() -> None:
    settings = Settings(cache_redis_url="redis://:hunter2-hunter2@cache:6379/0")  # type: ignore[arg-type]
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert settings.cache_redis_url is not None
    assert settings.cache_redis_url.get_secret_value().endswith("@cache:6379/0")
