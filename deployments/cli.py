"""The `animegan-serve` command: manage weights and stylize files, in-process or via a server."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import click
import httpx
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from .core import pipeline, weights
from .core.errors import AnimeGANError, Unreachable, error_from_code
from .core.options import StylizeOptions
from .core.settings import OFFICIAL_STYLES, Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
FILE_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}

console = Console(stderr=True, soft_wrap=True)  # one line per message, even in logs

URL_OPTION = click.option("--url", default="http://127.0.0.1:8000", show_default=True,
                          help="Address of a running animegan-serve.")


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
    ANIMEGAN_WEIGHTS_DIR=/data/weights, or ANIMEGAN_API_KEY for a server that asks for a key.

    Example: animegan-serve stylize photo.jpg -o anime/ --style paprika
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# -- weights ---------------------------------------------------------------------------------


@main.group("weights")
def weights_group() -> None:
    """List, download and verify each style's weights file.

    Example: animegan-serve weights fetch && animegan-serve weights verify
    """


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


class Stylized(NamedTuple):
    body: bytes
    cached: bool  # the server answered from its cache (hit, or an identical request in flight)


# Turns one image file's bytes into the encoded result, or raises AnimeGANError.
Stylizer = Callable[[bytes, StylizeOptions], Stylized]


@dataclass
class Summary:
    """What a `stylize` run did, for its last line and its exit code."""

    done: int = 0
    skipped: int = 0
    cached: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self, output_dir: Path) -> str:
        return (f"{self.done} done, {self.skipped} skipped, {len(self.failures)} failed, "
                f"{self.cached} cached; results in {output_dir}")


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output-dir", required=True, type=click.Path(path_type=Path),
              help="Folder for the results (created if missing).")
@click.option("-r", "--recursive", is_flag=True,
              help="Also take images in subfolders; results keep the folder structure.")
@click.option("--skip-existing", is_flag=True, help="Leave files whose result already exists.")
@click.option("--style", help="Style name (default: the default_style setting).")
@click.option("--size", type=int, help="Long side of the result in pixels (default 512).")
@click.option("--crop", type=click.Choice(["none", "square"]), default="none", show_default=True,
              help="'square' centre-crops first, as face2paint does.")
@click.option("--format", "format_", type=click.Choice(["png", "jpeg", "webp"]),
              help="Output format (default png).")
@click.option("--quality", type=int, help="JPEG / WebP quality, 1-100 (default 90).")
@click.option("--local", is_flag=True, help="Run the model in this process instead of a server.")
@URL_OPTION
@click.option("-j", "--jobs", type=click.IntRange(min=1),
              help="Files in flight at once (default: 4 to a server, 1 locally).")
def stylize(
    inputs: tuple[Path, ...],
    output_dir: Path,
    recursive: bool,
    skip_existing: bool,
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

    Prints one line per file that failed and a summary; exits 1 if any file failed.

    Example: animegan-serve stylize photos/ -r -o anime/ --style paprika -j 8
    """
    settings = load_settings()
    client = None if local else ServerClient(url, settings)
    if client is not None:  # the server's styles, not ours, are the ones that exist
        settings = client.adopt_styles(settings)
    try:
        options = StylizeOptions.build(settings, style=style, size=size, crop=crop,
                                       format=format_, quality=quality)
    except AnimeGANError as exc:
        raise click.UsageError(exc.message) from None
    planned = plan_jobs(inputs, output_dir, options, recursive=recursive)
    if not planned:
        raise click.UsageError("no image files found in the inputs"
                               + ("" if recursive else " (add --recursive for subfolders)"))
    todo = [job for job in planned if not (skip_existing and job.target.exists())]
    summary = Summary(skipped=len(planned) - len(todo))
    if todo:
        stylizer = client.stylize if client is not None else local_stylizer(settings, options.style)
        run_jobs(todo, options, stylizer, summary, workers=jobs or (1 if local else 4))
    console.print(summary.line(output_dir), highlight=False)
    if summary.failures:
        sys.exit(1)


def plan_jobs(
    inputs: tuple[Path, ...], output_dir: Path, options: StylizeOptions, *, recursive: bool = False
) -> list[Job]:
    """Files named directly, plus the image files inside named folders, with their targets.

    A folder's files keep their path below it; two inputs that would write the same result
    file are refused rather than one silently overwriting the other.
    """
    suffix = FILE_SUFFIXES[options.format]
    jobs = []
    for item in inputs:
        if item.is_dir():
            found = sorted(_images_in(item, recursive=recursive, exclude=output_dir))
            jobs += [Job(p, output_dir / p.relative_to(item).with_suffix(suffix)) for p in found]
        else:
            jobs.append(Job(item, output_dir / Path(item.name).with_suffix(suffix)))
    sources: dict[Path, Path] = {}
    for job in jobs:
        other = sources.setdefault(job.target, job.source)
        if other != job.source:
            raise click.UsageError(f"{other} and {job.source} would both be written to "
                                   f"{job.target}; rename one or stylize them separately")
    return jobs


def _images_in(folder: Path, *, recursive: bool, exclude: Path) -> Iterator[Path]:
    """Image files in `folder` (and its subfolders), leaving out hidden ones and `exclude`."""
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            if recursive and entry.resolve() != exclude.resolve():
                yield from _images_in(entry, recursive=True, exclude=exclude)
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            yield entry


def run_jobs(
    jobs: list[Job], options: StylizeOptions, stylizer: Stylizer, summary: Summary, *,
    workers: int = 1,
) -> None:
    """Run every job, `workers` at a time, with a progress bar; one line per failed file."""
    with _progress(MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()) as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task("stylizing", total=len(jobs))
        running = [pool.submit(run_job, job, options, stylizer) for job in jobs]
        for finished in as_completed(running):
            outcome = finished.result()
            if isinstance(outcome, str):
                summary.failures.append(outcome)
                progress.console.print(f"[red]{escape(outcome)}", highlight=False)
            else:
                summary.done += 1
                summary.cached += outcome.cached
            progress.advance(task)


def run_job(job: Job, options: StylizeOptions, stylizer: Stylizer) -> Stylized | str:
    """Stylize one file: its result, or a one-line reason it failed."""
    try:
        result = stylizer(job.source.read_bytes(), options)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        job.target.write_bytes(result.body)
    except AnimeGANError as exc:
        return f"{job.source}: {exc.code}: {exc.message}"
    except OSError as exc:
        return f"{job.source}: {exc.strerror or exc}"
    return result


def local_stylizer(settings: Settings, style: str) -> Stylizer:
    """An in-process engine holding just `style`."""
    from .core.engine import Engine  # torch import is slow: only when stylizing locally

    with console.status(f"loading style {style}"):
        engine = Engine.load(settings.model_copy(update={"styles": [style], "default_style": style}))
    if style not in engine.networks:
        raise click.ClickException(engine.statuses[style].error or f"style {style} did not load")

    def run(data: bytes, options: StylizeOptions) -> Stylized:
        (result,) = engine.run(options.style, [pipeline.prepare(data, options, settings)])
        return Stylized(pipeline.finish(result, options, settings), cached=False)

    return run


# -- the server's own view -----------------------------------------------------------------------


@main.command()
@URL_OPTION
def styles(url: str) -> None:
    """List the server's styles, whether each is ready, and why not.

    Example: animegan-serve styles --url http://127.0.0.1:8000
    """
    table = Table("style", "ready", "weights", "description")
    for style in ServerClient(url, load_settings()).get("/v1/styles"):
        ready = "yes" if style["ready"] else f"[red]no: {escape(style.get('error') or 'loading')}"
        weights_state = "official" if style["verified"] else "[yellow]not the official file"
        table.add_row(style["name"], ready, weights_state, style["description"])
    Console().print(table)


@main.command()
@URL_OPTION
def stats(url: str) -> None:
    """Show the server's cache, ingress and model counters as tables.

    Example: animegan-serve stats
    """
    figures = ServerClient(url, load_settings()).get("/v1/stats")
    out = Console()
    cache = figures["cache"]
    out.print(_pairs("cluster cache", cache) if cache else "[yellow]cluster cache: unavailable")
    ingress = dict(figures["ingress"])
    out.print(_pairs("this ingress replica", {**ingress.pop("hot_cache"), **ingress}))
    model = figures["model"]
    sizes = ", ".join(f"{size}: {count}" for size, count in model["batch_sizes"].items()) or "none"
    out.print(_pairs("model", {"replicas": model["replicas"], "inferences": model["inferences"],
                               "batches": model["batches"], "batch sizes (size: count)": sizes}))
    table = Table("replica", "node", "precision", "inferences", "batches", "batch cap",
                  "queue depth", title="model replicas", title_justify="left")
    for name, replica in sorted(model["per_replica"].items()):
        table.add_row(name, replica["node"][:8], replica["precision"], str(replica["inferences"]),
                      str(replica["batches"]), str(replica["batch_policy"]["cap"]),
                      str(replica["queue_depth"]))
    out.print(table)


def _pairs(title: str, values: dict[str, object]) -> Table:
    table = Table("counter", "value", title=title, title_justify="left")
    for name, value in values.items():
        shown = f"{value:,}" if isinstance(value, int) else str(value)
        table.add_row(name.replace("_", " "), shown)
    return table


class ServerClient:
    """A running animegan-serve, over HTTP (with the `api_key` setting, if one is set)."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url.rstrip("/")
        key = settings.api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        self.http = httpx.Client(base_url=self.url, timeout=120, headers=headers)

    def get(self, path: str, *, remedy: str = "start it with `make serve`") -> Any:
        """The JSON at `path` (exits with one line if the server is unreachable or refuses)."""
        try:
            answer = self.http.get(path)
        except httpx.HTTPError as exc:
            raise click.ClickException(
                f"cannot reach animegan-serve at {self.url} ({exc}); {remedy}"
            ) from None
        if answer.status_code != 200:
            raise click.ClickException(f"{self.url}{path}: {self._error(answer).message}")
        return answer.json()

    def adopt_styles(self, settings: Settings) -> Settings:
        """`settings` with the server's style list."""
        listed = self.get("/v1/styles", remedy="start it with `make serve` or pass --local")
        names = [s["name"] for s in listed]
        default = settings.default_style if settings.default_style in names else names[0]
        return settings.model_copy(update={"styles": names, "default_style": default})

    def stylize(self, data: bytes, options: StylizeOptions) -> Stylized:
        params = {k: v for k, v in vars(options).items() if v is not None}
        try:
            answer = self.http.post("/v1/stylize", content=data, params=params)
        except httpx.HTTPError as exc:
            raise Unreachable(f"request to {self.url} failed ({exc})") from None
        if answer.status_code == 200:
            return Stylized(answer.content, cached=answer.headers.get("x-cache") != "miss")
        raise self._error(answer)

    def _error(self, answer: httpx.Response) -> AnimeGANError:
        """The typed error a refusal carries (its JSON body), or Unreachable if it has none."""
        try:
            error = answer.json()["error"]
        except (ValueError, KeyError, TypeError):
            return Unreachable(f"HTTP {answer.status_code} from {self.url}")
        hint = " (set ANIMEGAN_API_KEY)" if error["code"] == "unauthorized" else ""
        return error_from_code(error["code"], error["message"] + hint)


class RateColumn(ProgressColumn):
    """Files per second so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} files/s", style="progress.data.speed")


@contextmanager
def _progress(*columns: object) -> Iterator[Progress]:
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), *columns,
        console=console,
    ) as progress:
        yield progress
