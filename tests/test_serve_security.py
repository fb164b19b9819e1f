"""Who gets in, and what the service gives away: API key, defaults, logs."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from deployments.core.settings import Settings
from tests.conftest import API_KEY, ROOT, Service, ray_log_files, smooth_picture
from tests.test_cli import cli

pytestmark = pytest.mark.timeout(600)

PROTECTED = [
    ("POST", "/v1/stylize"),
    ("GET", "/v1/styles"),
    ("GET", "/v1/stats"),
    ("POST", "/transform"),
]
LOG_MARKER = b"SECRET-PIXELS-7f3a9c"


def marked_jpeg() -> bytes:
    """A JPEG whose comment segment carries a marker that must never reach a log."""
    out = io.BytesIO()
    Image.fromarray(smooth_picture(48, 32, seed=31)).save(out, "JPEG", comment=LOG_MARKER)
    return out.getvalue()


def test_the_service_binds_loopback_and_has_no_key_by_default() -> None:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    assert Settings().api_key is None


@pytest.mark.parametrize("method, path", PROTECTED)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Bearer {API_KEY[:-1]}x", API_KEY, f"Basic {API_KEY}"]
)
def test_protected_routes_refuse_a_missing_or_wrong_key(
    locked_service: str, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = httpx.request(method, locked_service + path, content=marked_jpeg(), headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "unauthorized"
    assert answer.headers["www-authenticate"] == "Bearer"


def test_the_right_key_opens_every_protected_route(locked_service: str) -> None:
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    picture = httpx.post(
        f"{locked_service}/v1/stylize",
        content=marked_jpeg(),
        params={"size": "32"},
        headers=bearer,
        timeout=60,
    )
    assert picture.status_code == 200, picture.text
    assert httpx.get(f"{locked_service}/v1/styles", headers=bearer).json()[0]["name"] == "paprika"
    assert httpx.get(f"{locked_service}/v1/stats", headers=bearer).status_code == 200


def test_health_and_the_page_stay_open_and_tell_nothing_private(locked_service: str) -> None:
    health = httpx.get(f"{locked_service}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert httpx.get(f"{locked_service}/").status_code == 200


def test_the_cli_sends_the_key_from_the_environment(locked_service: str, tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(marked_jpeg())
    args = (
        "stylize",
        str(tmp_path / "a.jpg"),
        "-o",
        str(tmp_path / "out"),
        "--url",
        locked_service,
        "--size",
        "32",
    )
    refused = cli(*args)
    assert refused.returncode == 1 and "set ANIMEGAN_API_KEY" in refused.stderr
    allowed = cli(*args, env={"ANIMEGAN_API_KEY": API_KEY})
    assert allowed.returncode == 0, allowed.stderr
    assert "1 done" in allowed.stderr
    assert cli("stats", "--url", locked_service, env={"ANIMEGAN_API_KEY": API_KEY}).returncode == 0


def test_logs_hold_neither_image_bytes_nor_the_key(locked_service: str, service: Service) -> None:

    bearer = {"Authorization": f"Bearer {API_KEY}"}
    for params in ({"size": "32"}, {"size": "-1"}, {"style": "nope"}):  # a success and refusals
        httpx.post(
            f"{locked_service}/v1/stylize",
            content=marked_jpeg(),
            params=params,
            headers=bearer,
            timeout=60,
        )
    httpx.post(f"{locked_service}/v1/stylize", content=marked_jpeg(), timeout=60)  # no key
    files = ray_log_files()
    assert files
    for path in files:
        content = path.read_bytes()
        assert API_KEY.encode() not in content, path
        assert LOG_MARKER not in content, path
