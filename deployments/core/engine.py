"""The engine: every configured style loaded once, run on batches of same-shaped images.

Pixels go in and out as uint8 (N, H, W, 3) arrays. That layout *is* channels_last for the
network, so no copy is made on the way in or out. The precision is fp32 or bf16; `auto` picks
bf16 only where this CPU runs it faster and its output stays within the quality gate.

Every timing taken at start-up lives here, in the order a model replica runs them: the
precision choice, the warm-up, and the per-image time of each batch size (`time_batches`).
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from . import tiles
from .errors import AnimeGANError, StyleNotReady, UnknownStyle, WeightsError
from .network import MIN_SIDE, Generator
from .results import StyleStatus
from .settings import Precision, Settings
from .weights import ProgressHook, ensure, load_state_dict, registry

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Peak memory of one inference per input pixel, beyond the process's own: fp32's measured at
# 1024 to 4096 px (benchmarks/RESULTS.md, "Large pictures"); bf16's taken to be no more.
BYTES_PER_PIXEL = {"fp32": 1500, "bf16": 1500}
TILE_OVERLAP = 64
MIN_TILE = 256
MIN_PSNR_DB = 40.0
GATE_SIDE = 192  # side of the picture the precision gate times and compares on


class Engine:
    """Loaded styles and the one way to run them."""

    def __init__(
        self,
        networks: Mapping[str, Generator],
        *,
        precision: str,
        statuses: Mapping[str, StyleStatus] | None = None,
        precision_reason: str = "",
        memory_bytes: int | None = None,
    ) -> None:
        self.precision = precision
        self.precision_reason = precision_reason
        self.dtype = DTYPES[precision]
        # The pixels one call may hold at once within `memory_bytes` (no bound: None); a
        # picture larger than that runs in square tiles of at most as many.
        self.max_pixels = (
            None if memory_bytes is None else memory_bytes // BYTES_PER_PIXEL[precision]
        )
        self.tile = (
            None if self.max_pixels is None else max(MIN_TILE, math.isqrt(self.max_pixels) // 4 * 4)
        )
        # A tiled run swaps the network's GroupNorms for the picture's statistics: one at a time
        # (the CLI's in-process mode calls from several threads).
        self._tiling = threading.Lock()
        # Copies: converting a module's dtype is in place, and callers keep theirs.
        self.networks = {
            name: _prepare(copy.deepcopy(net), self.dtype) for name, net in networks.items()
        }
        self.statuses = (
            dict(statuses)
            if statuses is not None
            else {name: StyleStatus(name, "", ready=True) for name in networks}
        )

    @classmethod
    def load(
        cls,
        settings: Settings,
        *,
        progress: Callable[[str], ProgressHook | None] | None = None,
    ) -> Engine:
        """Fetch and load every configured style; one style failing leaves the others serving."""
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        networks: dict[str, Generator] = {}
        statuses: dict[str, StyleStatus] = {}
        for name, spec in registry(settings).items():
            try:
                weights = ensure(
                    spec,
                    settings.weights_dir,
                    timeout_s=settings.download_timeout_s,
                    progress=progress(name) if progress else None,
                )
                networks[name] = build_network(load_state_dict(weights), style=name)
            except AnimeGANError as exc:
                log.error("style %s is not ready: %s", name, exc.message)
                statuses[name] = StyleStatus(name, spec.description, ready=False, error=exc.message)
                continue
            statuses[name] = StyleStatus(
                name, spec.description, ready=True, verified=weights.verified, sha1=weights.sha1
            )
        precision, reason = choose_precision(
            settings.precision, next(iter(networks.values()), None)
        )
        log.info("precision %s: %s", precision, reason)
        engine = cls(
            networks,
            precision=precision,
            statuses=statuses,
            precision_reason=reason,
            memory_bytes=settings.inference_memory_bytes,
        )
        engine.warm_up(settings.default_size)
        return engine

    @property
    def ready_styles(self) -> list[str]:
        return list(self.networks)

    def run(
        self, style: str, images: Sequence[np.ndarray], *, threads: int | None = None
    ) -> list[np.ndarray]:
        """Stylize same-shaped (H, W, 3) uint8 images with one style; same shapes come back.

        `threads` overrides torch's thread count for this call only.
        """
        network = self.networks.get(style)
        if network is None:
            status = self.statuses.get(style)
            if status is None:
                raise UnknownStyle(f"unknown style {style!r}")
            raise StyleNotReady(f"style {style!r} is not ready: {status.error}")
        height, width = images[0].shape[:2]
        if self.max_pixels is None or len(images) * height * width <= self.max_pixels:
            return self._run(network, images, threads, tile=None)
        if height * width > self.max_pixels:  # one at a time, in tiles
            with self._tiling:
                return [self._run(network, [image], threads, self.tile)[0] for image in images]
        step = self.max_pixels // (height * width)  # as many at once as fit
        return [
            out
            for start in range(0, len(images), step)
            for out in self._run(network, images[start : start + step], threads, tile=None)
        ]

    def _run(
        self,
        network: Generator,
        images: Sequence[np.ndarray],
        threads: int | None,
        tile: int | None,
    ) -> list[np.ndarray]:
        batch = torch.from_numpy(np.stack(images))  # (N, H, W, 3) uint8
        with torch.inference_mode(), torch_threads(threads):
            out = run_network(network, batch.permute(0, 3, 1, 2), self.dtype, tile=tile)
        pixels = out.permute(0, 2, 3, 1).numpy()  # contiguous: `out` is channels_last
        return list(pixels)

    def warm_up(self, side: int) -> None:
        """Run one style once at `side`, so the first request pays no one-off set-up cost.

        The set-up is per shape, not per style: measured, each other style's first run then
        costs what its second does, so warming them all only delayed start-up (0.6 s a style).
        """
        if self.networks:
            self.run(self.ready_styles[0], [gate_picture(side)])

    def time_batches(
        self, sizes: Sequence[int], *, side: int, rounds: int = 3, tolerance: float = 1.25
    ) -> dict[int, float]:
        """Seconds per image for each batch size, the fastest of `rounds` interleaved rounds.

        Interleaving means a burst of other work on the machine (another replica starting, say)
        cannot favour one size; a size more than `tolerance` times slower than the best so far
        is not timed again. The first round's runs also build each shape's kernels (measured:
        3-10% of a run at 256 px), which the later rounds' minimum leaves out.
        """
        if not self.networks:
            return {}
        style, picture = self.ready_styles[0], gate_picture(side)
        fastest: dict[int, float] = {}
        for _ in range(rounds):
            for size in sizes:
                batch = [picture] * size
                start = time.perf_counter()
                self.run(style, batch)
                per_image = (time.perf_counter() - start) / size
                fastest[size] = min(per_image, fastest.get(size, per_image))
            best = min(fastest.values())
            sizes = [n for n in sizes if fastest[n] <= tolerance * best]
        return dict(sorted(fastest.items()))


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `count` inside the block (switching costs ~nothing)."""
    if count is None or count == torch.get_num_threads():
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_network(state_dict: Mapping[str, torch.Tensor], *, style: str = "") -> Generator:
    """A Generator holding exactly these weights (strict: every key present, none extra)."""
    network = Generator()
    try:
        network.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise WeightsError(
            f"style {style!r}: the weights are not an AnimeGANv2 generator ({first_line})"
        ) from exc
    return network


def _prepare(network: Generator, dtype: torch.dtype) -> Generator:
    network = network.eval().requires_grad_(False)
    # torch's stubs lack Module.to's memory_format, which it takes at run time
    return network.to(dtype=dtype, memory_format=torch.channels_last)  # type: ignore[call-overload,no-any-return]


def run_network(
    network: Generator, images: torch.Tensor, dtype: torch.dtype, *, tile: int | None = None
) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> uint8 (N, 3, H, W) with the reference port's pre/post-processing;
    in tiles of at most `tile` px a side where given (core/tiles.py)."""
    height, width = images.shape[-2:]
    x = images.float().mul_(2 / 255).sub_(1).to(dtype)  # x / 255 * 2 - 1
    if height < MIN_SIDE or width < MIN_SIDE:
        # Too small for the network's reflection pads: grow by edge replication, crop after.
        x = F.pad(x, (0, max(0, MIN_SIDE - width), 0, max(0, MIN_SIDE - height)), mode="replicate")
    if tile is not None:
        x = tiles.run_tiled(network, x, tile=tile, overlap=TILE_OVERLAP)
    else:
        x = network(x)
    y = x[..., :height, :width]
    return y.float().clamp_(-1, 1).mul_(127.5).add_(127.5).round_().to(torch.uint8)


def choose_precision(requested: Precision, network: Generator | None) -> tuple[str, str]:
    """Resolve `auto` by timing fp32 against bf16 and checking bf16's PSNR against fp32."""
    if requested != "auto":
        return requested, f"{requested} requested by settings"
    if network is None:
        return "fp32", "no style loaded to measure with"
    mkldnn = torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
    if not mkldnn or not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "fp32", "this CPU has no native bf16"
    picture = torch.from_numpy(gate_picture(GATE_SIDE)[None]).permute(0, 3, 1, 2)
    outputs, seconds = {}, {}
    for name, dtype in DTYPES.items():
        candidate = _prepare(copy.deepcopy(network), dtype)
        with torch.inference_mode():
            run_network(candidate, picture, dtype)  # first call builds kernels; not timed
            times = []
            for _ in range(3):
                start = time.perf_counter()
                outputs[name] = run_network(candidate, picture, dtype)
                times.append(time.perf_counter() - start)
        seconds[name] = sorted(times)[1]
    quality = psnr(outputs["fp32"].numpy(), outputs["bf16"].numpy())
    measured = (
        f"bf16 {seconds['bf16'] * 1e3:.0f} ms vs fp32 {seconds['fp32'] * 1e3:.0f} ms "
        f"at {GATE_SIDE} px, PSNR {quality:.1f} dB (gate {MIN_PSNR_DB:.0f} dB)"
    )
    if quality < MIN_PSNR_DB:
        return "fp32", f"bf16 fails the quality gate: {measured}"
    if seconds["bf16"] >= seconds["fp32"]:
        return "fp32", f"bf16 is not faster here: {measured}"
    return "bf16", f"bf16 is {seconds['fp32'] / seconds['bf16']:.1f}x faster and passes: {measured}"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 images, in dB (inf when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def gate_picture(side: int) -> np.ndarray:
    """A fixed (side, side, 3) uint8 picture with gradients, edges and texture."""
    ramp = np.linspace(0.0, 1.0, side)
    yy, xx = np.meshgrid(ramp, ramp, indexing="ij")
    disc = ((yy - 0.5) ** 2 + (xx - 0.4) ** 2 < 0.08).astype(np.float64)
    texture = np.random.default_rng(0).random((side, side))
    channels = (xx, 0.6 * yy + 0.4 * disc, 0.5 * texture + 0.5 * (1 - xx) * yy)
    return np.rint(np.stack(channels, axis=-1) * 255).astype(np.uint8)
