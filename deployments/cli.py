"""The `animegan-serve` command: manage weights and stylize files, in-process or via a server."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from .core import pipeline, weights
from .core.errors import AnimeGANError, Unreachable, error_from_code
from .core.options import StylizeOptions
from .core.settings import OFFICIAL_STYLES, Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
FILE_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}

console = Console(stderr=True, soft_wrap=True)  # one line per message, even in logs

# Turns one image file's bytes into the encoded result, or raises AnimeGANError.
Stylizer = Callable[[bytes, StylizeOptions], bytes]


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment plus command-line overrides; a bad value exits with 2."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise click.UsageError(f"invalid setting {where}: {first['msg']}") from None


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine decides (precision, loading).")
def main(verbose: bool) -> None:
    """Photo-to-anime style transfer with AnimeGANv2.

    Settings come from ANIMEGAN_* environment variables (see the README), for example
    ANIMEGAN_WEIGHTS_DIR=/data/weights.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- weights ---------------------------------------------------------------------------------


@main.group("weights")
def weights_group() -> None:
    """List, download and verify each style's weights file."""


@weights_group.command("list")
def weights_list() -> None:
    """Show every configured style, its file and whether it matches its pin.

    Example: animegan-serve weights list
    """
    settings = load_settings()
    table = Table("style", "file", "state", "description")
    for spec in weights.registry(settings).values():
        table.add_row(spec.name, str(weights.local_path(spec, settings.weights_dir)),
                      _state(spec, settings), spec.description)
    Console().print(table)


@weights_group.command("fetch")
@click.argument("names", nargs=-1)
def weights_fetch(names: tuple[str, ...]) -> None:
    """Download missing weights (all configured styles, or NAMES), checking each pin.

    Example: animegan-serve weights fetch paprika
    """
    settings = load_settings()
    specs = _select(settings, names)
    failed = 0
    with _progress(DownloadColumn(), TransferSpeedColumn()) as progress:
        for spec in specs:
            task = progress.add_task(spec.name, total=None)

            def hook(done: int, total: int | None, task: int = task) -> None:
                progress.update(task, completed=done, total=total)

            try:
                found = weights.ensure(spec, settings.weights_dir,
                                       timeout_s=settings.download_timeout_s, progress=hook)
            except AnimeGANError as exc:
                failed += 1
                progress.console.print(f"[red]{spec.name}: {exc.message}")
                continue
            progress.update(task, completed=1, total=1)
            progress.console.print(f"{spec.name}: {found.path} ({_verdict(found)})")
    if failed:
        sys.exit(1)


@weights_group.command("verify")
def weights_verify() -> None:
    """Check every local weights file against its pin; exit 1 if any is missing or differs.

    Example: animegan-serve weights verify
    """
    settings = load_settings()
    bad = 0
    for spec in weights.registry(settings).values():
        state = _state(spec, settings)
        bad += state not in ("verified", "present, no pin")
        click.echo(f"{spec.name}: {state}")
    if bad:
        sys.exit(1)


@weights_group.command("seed")
@click.argument("names", nargs=-1)
@click.option("--seed", default=0, show_default=True, help="Seed of the first style; +1 per style.")
def weights_seed(names: tuple[str, ...], seed: int) -> None:
    """Write stand-in weights made from a fixed seed: real cost, meaningless pictures.

    For tests, benchmarks and offline demos where the official files cannot be downloaded.
    Example: ANIMEGAN_WEIGHTS_DIR=/tmp/seeded animegan-serve weights seed
    """
    settings = load_settings()
    chosen = list(names) or list(OFFICIAL_STYLES)
    for path in weights.write_seeded(settings.weights_dir, chosen, seed=seed):
        click.echo(f"wrote {path} (seeded stand-in, not the official weights)")


def _select(settings: Settings, names: tuple[str, ...]) -> list[weights.StyleSpec]:
    specs = weights.registry(settings)
    unknown = [name for name in names if name not in specs]
    if unknown:
        raise click.BadParameter(f"unknown style {unknown[0]!r}; the styles are {', '.join(specs)}")
    return [specs[name] for name in names] if names else list(specs.values())


def _state(spec: weights.StyleSpec, settings: Settings) -> str:
    found = weights.inspect(spec, settings.weights_dir)
    return "missing" if found is None else _verdict(found)


def _verdict(found: weights.StyleWeights) -> str:
    if found.spec.sha1 is None:
        return "present, no pin"
    return "verified" if found.verified else f"UNVERIFIED (sha1 {found.sha1[:12]} differs from pin)"


# -- stylize ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the results (created if missing).")
@click.option("--style", help="Style name (default: the default_style setting).")
@click.option("--size", type=int, help="Long side of the result in pixels (default 512).")
@click.option("--crop", type=click.Choice(["none", "square"]), default="none", show_default=True,
              help="'square' centre-crops first, as face2paint does.")
@click.option("--format", "format_", type=click.Choice(["png", "jpeg", "webp"]),
              help="Output format (default png).")
@click.option("--quality", type=int, help="JPEG / WebP quality, 1-100 (default 90).")
@click.option("--local", is_flag=True, help="Run the model in this process instead of a server.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The animegan-serve server to send files to (ignored with --local).")
@click.option("-j", "--jobs", type=click.IntRange(min=1),
              help="Files in flight at once (default: 4 to a server, 1 locally).")
def stylize(
    inputs: tuple[Path, ...],
    output_dir: Path,
    style: str | None,
    size: int | None,
    crop: str,
    format_: str | None,
    quality: int | None,
    local: bool,
    url: str,
    jobs: int | None,
) -> None:
    """Stylize image files and folders of images into OUTPUT_DIR.

    Example: animegan-serve stylize photos/ --output-dir anime/ --style paprika
    """
    settings = load_settings()
    client = None if local else ServerClient(url)
    if client is not None:  # the server's styles, not ours, are the ones that exist
        settings = client.adopt_styles(settings)
    try:
        options = StylizeOptions.build(settings, style=style, size=size, crop=crop,
                                       format=format_, quality=quality)
    except AnimeGANError as exc:
        raise click.UsageError(exc.message) from None
    planned = plan_jobs(inputs, output_dir, options)
    if not planned:
        raise click.UsageError("no image files found in the inputs")
    stylizer = client.stylize if client is not None else local_stylizer(settings, options.style)
    failures = run_jobs(planned, options, stylizer, workers=jobs or (1 if local else 4))
    done = len(planned) - len(failures)
    console.print(f"{done} written to {output_dir}, {len(failures)} failed")
    if failures:
        sys.exit(1)


def plan_jobs(inputs: tuple[Path, ...], output_dir: Path, options: StylizeOptions) -> list[Job]:
    """Files named directly, plus the image files inside named folders, with their targets."""
    suffix = FILE_SUFFIXES[options.format]
    jobs = []
    for item in inputs:
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            jobs += [Job(p, output_dir / p.relative_to(item).with_suffix(suffix)) for p in found]
        else:
            jobs.append(Job(item, output_dir / Path(item.name).with_suffix(suffix)))
    return jobs


def run_jobs(
    jobs: list[Job], options: StylizeOptions, stylizer: Stylizer, *, workers: int = 1
) -> list[str]:
    """Run every job, `workers` at a time, with a progress bar; one line per failed file."""
    failures = []
    with _progress(MofNCompleteColumn(), TimeRemainingColumn()) as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task("stylizing", total=len(jobs))
        running = [pool.submit(run_job, job, options, stylizer) for job in jobs]
        for finished in as_completed(running):
            failure = finished.result()
            if failure is not None:
                failures.append(failure)
                progress.console.print(f"[red]{failure}", highlight=False)
            progress.advance(task)
    return failures


def run_job(job: Job, options: StylizeOptions, stylizer: Stylizer) -> str | None:
    """Stylize one file; a one-line reason if it failed."""
    try:
        result = stylizer(job.source.read_bytes(), options)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        job.target.write_bytes(result)
    except AnimeGANError as exc:
        return f"{job.source}: {exc.code}: {exc.message}"
    except OSError as exc:
        return f"{job.source}: {exc.strerror or exc}"
    return None


def local_stylizer(settings: Settings, style: str) -> Stylizer:
    """An in-process engine holding just `style`."""
    from .core.engine import Engine  # torch import is slow: only when stylizing locally

    with console.status(f"loading style {style}"):
        engine = Engine.load(settings.model_copy(update={"styles": [style], "default_style": style}))
    if style not in engine.networks:
        raise click.ClickException(engine.statuses[style].error or f"style {style} did not load")

    def run(data: bytes, options: StylizeOptions) -> bytes:
        (result,) = engine.run(options.style, [pipeline.prepare(data, options, settings)])
        return pipeline.finish(result, options, settings)

    return run


class ServerClient:
    """A running animegan-serve, over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def adopt_styles(self, settings: Settings) -> Settings:
        """`settings` with the server's style list (exits with one line if it is unreachable)."""
        try:
            listed = self.http.get("/v1/styles").raise_for_status().json()
        except httpx.HTTPError as exc:
            raise click.ClickException(
                f"cannot reach animegan-serve at {self.url} ({exc}); start it with `make serve` "
                "or pass --local"
            ) from None
        names = [s["name"] for s in listed]
        default = settings.default_style if settings.default_style in names else names[0]
        return settings.model_copy(update={"styles": names, "default_style": default})

    def stylize(self, data: bytes, options: StylizeOptions) -> bytes:
        params = {k: v for k, v in vars(options).items() if v is not None}
        try:
            answer = self.http.post("/v1/stylize", content=data, params=params)
        except httpx.HTTPError as exc:
            raise Unreachable(f"request to {self.url} failed ({exc})") from None
        if answer.status_code == 200:
            return answer.content
        try:
            error = answer.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise Unreachable(f"HTTP {answer.status_code} from {self.url}") from None
        raise error_from_code(error["code"], error["message"])


@contextmanager
def _progress(*columns: object) -> Iterator[Progress]:
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), *columns,
        console=console,
    ) as progress:
        yield progress
