"""Where each style's weights come from: the registry, local files, pinned downloads.

A style's file is `<weights_dir>/<name>.pt` (or a custom style's own path). If it is missing
it is downloaded to a temporary file, checked against its pin and renamed into place, so an
interrupted or corrupted transfer never leaves a file behind. Pins are git blob SHA-1s, the
ids GitHub shows for the official files. A local file that fails its pin still loads, marked
unverified: the operator put it there on purpose.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from .errors import WeightsError
from .network import Generator
from .settings import Settings

log = logging.getLogger(__name__)

OFFICIAL_URL = "https://github.com/bryandlee/animegan2-pytorch/raw/main/weights/{name}.pt"

# (bytes done, bytes expected or None) for one download.
ProgressHook = Callable[[int, int | None], None]


@dataclass(frozen=True)
class StyleSpec:
    """A style as configured: where its weights live and what they must hash to."""

    name: str
    description: str
    url: str | None = None
    path: Path | None = None
    sha1: str | None = None


@dataclass(frozen=True)
class StyleWeights:
    """A style's weights file on disk, with its actual hash and whether it matched the pin."""

    spec: StyleSpec
    path: Path
    sha1: str
    verified: bool


# The port's four files: name, git blob SHA-1 pin, what it is for.
_OFFICIAL_FILES = (
    (
        "celeba_distill",
        "3b7ea61b02254980831cc3bc77af30666dbc999c",
        "Webtoon-like faces, distilled on CelebA-HQ; best on 256 px faces.",
    ),
    (
        "face_paint_512_v1",
        "19c1a1da4d9580186109a2b055d91044e5127de6",
        "Face portrait v1: painterly faces; best on 512 px square faces.",
    ),
    (
        "face_paint_512_v2",
        "d75102f8f201ddaf8dbe6b913b1a97585b55f838",
        "Face portrait v2 (torch.hub default): smoother faces; best on 512 px square faces.",
    ),
    (
        "paprika",
        "58086c9db9fc7a9e5c2876ca31b8079599352643",
        "Paprika: Satoshi Kon-like scenes and landscapes; any size.",
    ),
)
OFFICIAL: dict[str, StyleSpec] = {
    name: StyleSpec(name, description, OFFICIAL_URL.format(name=name), sha1=sha1)
    for name, sha1, description in _OFFICIAL_FILES
}


def registry(settings: Settings) -> dict[str, StyleSpec]:
    """The configured styles, in the order of `settings.styles`."""
    specs: dict[str, StyleSpec] = {}
    for name in settings.styles:
        custom = settings.custom_styles.get(name)
        if custom is None:
            specs[name] = OFFICIAL[name]
        elif custom.source.startswith(("http://", "https://")):
            specs[name] = StyleSpec(name, custom.description, url=custom.source, sha1=custom.sha1)
        else:
            path = Path(custom.source).expanduser()
            specs[name] = StyleSpec(name, custom.description, path=path, sha1=custom.sha1)
    return specs


def git_blob_sha1(data: bytes) -> str:
    """The id git (and GitHub) gives a file: SHA-1 of `blob <len>\\0` + data."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def local_path(spec: StyleSpec, weights_dir: Path) -> Path:
    return spec.path if spec.path is not None else weights_dir / f"{spec.name}.pt"


def inspect(spec: StyleSpec, weights_dir: Path) -> StyleWeights | None:
    """The style's local file and its pin check, or None if there is no file yet."""
    path = local_path(spec, weights_dir)
    if not path.is_file():
        return None
    sha1 = git_blob_sha1(path.read_bytes())
    verified = spec.sha1 is not None and sha1 == spec.sha1
    return StyleWeights(spec, path, sha1, verified)


def ensure(
    spec: StyleSpec,
    weights_dir: Path,
    *,
    timeout_s: float = 60.0,
    progress: ProgressHook | None = None,
) -> StyleWeights:
    """The style's weights on disk: the local file if present, else a pinned download."""
    found = inspect(spec, weights_dir)
    if found is not None:
        if spec.sha1 is not None and not found.verified:
            log.warning(
                "style %s: %s does not match its pin (sha1 %s, expected %s); loading it unverified",
                spec.name,
                found.path,
                found.sha1,
                spec.sha1,
            )
        return found
    path = local_path(spec, weights_dir)
    if spec.url is None:
        raise WeightsError(f"style {spec.name!r}: weights file {path} does not exist")
    try:
        _download(spec.url, path, timeout_s=timeout_s, progress=progress)
    except (httpx.HTTPError, OSError) as exc:
        raise WeightsError(
            f"style {spec.name!r}: weights file {path} is missing and downloading {spec.url} "
            f"failed ({exc or type(exc).__name__}). Either download that URL yourself and save "
            f"it as {path}, or set ANIMEGAN_WEIGHTS_DIR to a folder that holds {spec.name}.pt"
        ) from exc
    sha1 = git_blob_sha1(path.read_bytes())
    if spec.sha1 is not None and sha1 != spec.sha1:
        path.unlink()
        raise WeightsError(
            f"style {spec.name!r}: the file downloaded from {spec.url} has sha1 {sha1}, "
            f"not the pinned {spec.sha1}; it was deleted"
        )
    return StyleWeights(spec, path, sha1, verified=spec.sha1 is not None)


def _download(url: str, dest: Path, *, timeout_s: float, progress: ProgressHook | None) -> None:
    """Stream `url` into `dest` through a temporary file renamed into place on success."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", url, dest)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with (
            os.fdopen(fd, "wb") as tmp,
            httpx.stream("GET", url, follow_redirects=True, timeout=timeout_s) as response,
        ):
            response.raise_for_status()
            expected = response.headers.get("content-length")
            total = int(expected) if expected is not None else None
            for chunk in response.iter_bytes():
                tmp.write(chunk)
                if progress is not None:
                    progress(response.num_bytes_downloaded, total)
            if total is not None and response.num_bytes_downloaded != total:
                raise OSError(
                    f"transfer ended after {response.num_bytes_downloaded} of {total} bytes"
                )
        os.replace(tmp_name, dest)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def load_state_dict(weights: StyleWeights) -> dict[str, torch.Tensor]:
    """The file's tensors; `weights_only=True` so a weights file can never run code."""
    try:
        state = torch.load(weights.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(
            f"style {weights.spec.name!r}: {weights.path} is not a readable state_dict ({exc})"
        ) from exc
    if not isinstance(state, dict):
        raise WeightsError(
            f"style {weights.spec.name!r}: {weights.path} does not hold a state_dict"
        )
    return state


def seeded_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Weights of the real architecture from a fixed seed: the real cost, meaningless pictures.

    Stand-ins for the official files where they cannot be downloaded (tests, benchmarks).
    GroupNorm's affine parameters are jittered so they are exercised too.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        network = Generator()
    state = network.state_dict()
    for tensor in state.values():
        if tensor.ndim == 1:  # GroupNorm and depthwise-conv bias / scale
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
    return state


def write_seeded(weights_dir: Path, names: list[str], *, seed: int = 0) -> list[Path]:
    """Write `<name>.pt` seeded stand-ins (seed + index) into `weights_dir`."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, name in enumerate(names):
        path = weights_dir / f"{name}.pt"
        torch.save(seeded_state_dict(seed + index), path)
        paths.append(path)
    return paths
