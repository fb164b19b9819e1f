from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import pytest
import torch

from deployments.core import weights
from deployments.core.errors import WeightsError
from deployments.core.settings import CustomStyle, Settings
from tests.conftest import FileServer


def seeded_file_bytes(seed: int = 5) -> bytes:
    out = io.BytesIO()
    torch.save(weights.seeded_state_dict(seed), out)
    return out.getvalue()


def remote_spec(server: FileServer, path: str, *, sha1: str | None) -> weights.StyleSpec:
    return weights.StyleSpec("remote", "a style served over HTTP", url=server.url + path, sha1=sha1)


def test_git_blob_sha1_is_the_id_git_gives_a_file() -> None:
    # `printf 'hello\n' | git hash-object --stdin`
    assert weights.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_the_registry_pins_the_four_official_files() -> None:
    specs = weights.registry(Settings())
    assert specs["paprika"].sha1 == "58086c9db9fc7a9e5c2876ca31b8079599352643"
    assert str(specs["face_paint_512_v2"].url).endswith("/weights/face_paint_512_v2.pt")
    assert all(spec.description for spec in specs.values())


def test_custom_styles_join_the_registry_by_path_or_url(tmp_path: Path) -> None:
    settings = Settings(
        styles=["paprika", "local", "remote"],
        custom_styles={
            "local": CustomStyle(source=str(tmp_path / "mine.pt")),
            "remote": CustomStyle(source="https://example.invalid/x.pt", sha1="ab"),
        },
    )
    specs = weights.registry(settings)
    assert list(specs) == ["paprika", "local", "remote"]
    assert specs["local"].path == tmp_path / "mine.pt" and specs["local"].url is None
    assert specs["remote"].url == "https://example.invalid/x.pt"


def test_a_download_matching_its_pin_is_written_and_verified(
    file_server: FileServer, tmp_path: Path
) -> None:
    data = seeded_file_bytes()
    file_server.files["/w.pt"] = data
    seen: list[tuple[int, int | None]] = []
    spec = remote_spec(file_server, "/w.pt", sha1=weights.git_blob_sha1(data))
    found = weights.ensure(spec, tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert found.verified and found.path == tmp_path / "remote.pt"
    assert found.path.read_bytes() == data
    assert seen[-1] == (len(data), len(data))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["remote.pt"]


def test_a_download_failing_its_pin_is_deleted_and_reported(
    file_server: FileServer, tmp_path: Path
) -> None:
    file_server.files["/w.pt"] = seeded_file_bytes()
    spec = remote_spec(file_server, "/w.pt", sha1="0" * 40)
    with pytest.raises(WeightsError, match="not the pinned 0000"):
        weights.ensure(spec, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_transfer_leaves_no_partial_file(
    file_server: FileServer, tmp_path: Path
) -> None:
    file_server.files["/w.pt"] = seeded_file_bytes()
    file_server.cut.add("/w.pt")
    with pytest.raises(WeightsError):
        weights.ensure(remote_spec(file_server, "/w.pt", sha1=None), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_names_the_file_the_url_and_both_remedies(
    file_server: FileServer, tmp_path: Path
) -> None:
    spec = remote_spec(file_server, "/nowhere.pt", sha1=None)
    with pytest.raises(WeightsError) as raised:
        weights.ensure(spec, tmp_path)
    message = raised.value.message
    assert str(tmp_path / "remote.pt") in message
    assert str(spec.url) in message
    assert "save it as" in message and "ANIMEGAN_WEIGHTS_DIR" in message


def test_a_local_file_is_used_without_downloading(tmp_path: Path) -> None:
    data = seeded_file_bytes()
    (tmp_path / "remote.pt").write_bytes(data)
    spec = weights.StyleSpec(
        "remote", "", url="http://127.0.0.1:9/never", sha1=weights.git_blob_sha1(data)
    )
    assert weights.ensure(spec, tmp_path).verified


def test_a_local_file_failing_its_pin_loads_unverified_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "paprika.pt").write_bytes(seeded_file_bytes())
    with caplog.at_level(logging.WARNING):
        found = weights.ensure(weights.OFFICIAL["paprika"], tmp_path)
    assert not found.verified
    assert "does not match its pin" in caplog.text
    assert weights.load_state_dict(found)["out_layer.0.weight"].shape == (3, 32, 1, 1)


class Exploit:
    def __reduce__(self) -> tuple:
        return (print, ("pickle code ran",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_files_are_loaded_with_weights_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"x": Exploit()}))
    found = weights.StyleWeights(weights.StyleSpec("evil", ""), path, "", False)
    with pytest.raises(WeightsError, match="not a readable state_dict"):
        weights.load_state_dict(found)
    assert "pickle code ran" not in capsys.readouterr().out


def test_seeded_weights_are_reproducible_and_differ_by_seed() -> None:
    a, b, c = (
        weights.seeded_state_dict(1),
        weights.seeded_state_dict(1),
        weights.seeded_state_dict(2),
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["block_a.0.1.weight"], c["block_a.0.1.weight"])
    assert not torch.equal(a["block_a.0.2.weight"], torch.ones_like(a["block_a.0.2.weight"]))


def test_the_registry_and_the_settings_name_the_same_official_styles() -> None:
    from deployments.core.settings import OFFICIAL_STYLES

    assert tuple(weights.OFFICIAL) == OFFICIAL_STYLES
