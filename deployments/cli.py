"""The `animegan-serve` command: manage weights and stylize files, in-process or via a server.

Click and the console live here only: the work is done by `files.py` (which files, run them),
`client.py` (a server over HTTP) and the core; their refusals are `AnimeGANError`s, printed as
one line by the group's outermost handler.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

import click
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
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from .client import DEFAULT_URL, Client, JobCounts
from .core import pipeline, weights
from .core.cache_key import cache_key
from .core.errors import AnimeGANError, BadParameter, Unreachable
from .core.media import FORMATS, Kind, kind_of
from .core.options import StylizeOptions
from .core.results import Picture, Stylized
from .core.settings import OFFICIAL_STYLES, Crop, ImageFormat, OutputFormat, Settings
from .files import (
    IMAGE_SUFFIXES,
    Convert,
    OptionsFor,
    Summary,
    images_in,
    is_video_file,
    plan_jobs,
    run_jobs,
    warm_all,
)

URL_OPTION = click.option(
    "--url", default=DEFAULT_URL, show_default=True, help="Address of a running animegan-serve."
)
STYLE_OPTION = click.option("--style", help="Style name (default: the default_style setting).")
SIZE_OPTION = click.option(
    "--size", type=int, help="Long side of the result in pixels (default 512)."
)
CROP_OPTION = click.option(
    "--crop",
    type=click.Choice(get_args(Crop)),
    default="none",
    show_default=True,
    help="'square' centre-crops first, as face2paint does; 'face' crops a square around the "
    "most prominent face (the centre square if none is found).",
)
QUALITY_OPTION = click.option(
    "--quality", type=int, help="JPEG / WebP quality, 1-100 (default 90)."
)


def format_option(formats: Any, text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--format`, one of the Literal `formats`."""
    return click.option("--format", "format_", type=click.Choice(get_args(formats)), help=text)


def console() -> Console:
    """Messages and progress, on stderr, one line per message even in logs."""
    return Console(stderr=True, soft_wrap=True)


def load_settings() -> Settings:
    """Settings from the environment; a bad value exits with 2."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "settings"
        raise click.UsageError(f"invalid setting {where}: {first['msg']}") from None


class Commands(click.Group):
    """The group whose outermost handler prints a refusal as one line and exits 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Unreachable as exc:
            raise click.ClickException(
                f"{exc.message}; start it with `make serve` (or stylize with --local)"
            ) from None
        except AnimeGANError as exc:
            raise click.ClickException(f"{exc.code}: {exc.message}") from None


@click.group(cls=Commands)
@click.option(
    "-v", "--verbose", is_flag=True, help="Log what the engine decides (precision, loading)."
)
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
        table.add_row(
            spec.name,
            str(weights.local_path(spec, settings.weights_dir)),
            _state(spec, settings),
            spec.description,
        )
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

            def hook(done: int, total: int | None, task: TaskID = task) -> None:
                progress.update(task, completed=done, total=total)

            try:
                found = weights.ensure(
                    spec, settings.weights_dir, timeout_s=settings.download_timeout_s, progress=hook
                )
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


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Folder for the results (created if missing).",
)
@click.option(
    "-r",
    "--recursive",
    is_flag=True,
    help="Also take images in subfolders; results keep the folder structure.",
)
@click.option("--skip-existing", is_flag=True, help="Leave files whose result already exists.")
@STYLE_OPTION
@SIZE_OPTION
@CROP_OPTION
@format_option(
    OutputFormat,
    "Output format: png (default), jpeg or webp for pictures; mp4 (default) or webm for videos.",
)
@QUALITY_OPTION
@click.option(
    "--face-style",
    help="Draw every face of a picture again in this style, blended into the whole picture "
    "(--style original keeps the photo around them). Pictures only; needs the server.",
)
@click.option("--local", is_flag=True, help="Run the model in this process instead of a server.")
@URL_OPTION
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    help="Files in flight at once: jobs in the server's line (default 4), or 1 with --local.",
)
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
    face_style: str | None,
    local: bool,
    url: str,
    jobs: int | None,
) -> None:
    """Stylize image and video files, and folders of them, into OUTPUT_DIR (videos as jobs
    of the server, their progress in frames).

    Prints one line per file that failed and a summary; exits 1 if any file failed.

    Example: animegan-serve stylize photos/ -r -o anime/ --style paprika -j 8
    """
    settings = load_settings()
    if local and face_style is not None:
        raise click.UsageError("--face-style is drawn by the server's replicas: drop --local")
    with contextlib.ExitStack() as stack:
        client = None if local else stack.enter_context(Client(url, api_key=settings.api_key))
        if client is not None:  # the server's styles, not ours, are the ones that exist
            names = [s["name"] for s in client.styles()]
            default = settings.default_style if settings.default_style in names else names[0]
            settings = settings.model_copy(update={"styles": names, "default_style": default})
        try:
            options_for = file_options(settings, style, size, crop, format_, quality, face_style)
            planned = plan_jobs(inputs, output_dir, options_for, recursive=recursive)
        except AnimeGANError as exc:
            raise click.UsageError(exc.message) from None
        if not planned:
            raise click.UsageError(
                "no image or video files found in the inputs"
                + ("" if recursive else " (add --recursive for subfolders)")
            )
        todo = [job for job in planned if not (skip_existing and job.target.exists())]
        summary = Summary()
        if todo:
            counts = JobCounts()  # through the server's line: at most `workers` jobs in it
            style_ = todo[0].options.style  # every file's
            convert = counts.through(client) if client else local_convert(settings, style_)
            workers = jobs or (1 if local else 4)
            with _progress(MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()) as progress:
                task = progress.add_task("stylizing", total=len(todo))
                counts.on_change = lambda line: progress.update(
                    task, description=f"stylizing: {line}"
                )

                def show(outcome: Stylized | str) -> None:
                    if isinstance(outcome, str):
                        progress.console.print(f"[red]{escape(outcome)}", highlight=False)
                    progress.advance(task)

                summary = run_jobs(todo, convert, workers=workers, on_done=show)
    summary.skipped = len(planned) - len(todo)
    console().print(summary.line(output_dir), highlight=False)
    if summary.failures:
        sys.exit(1)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--style",
    "styles_",
    multiple=True,
    help="A style to warm (repeatable; default: every style the server has ready).",
)
@click.option("--size", type=int, help="Long side of the results in pixels (default 512).")
@URL_OPTION
def warm(folder: Path, styles_: tuple[str, ...], size: int | None, url: str) -> None:
    """Send every picture in FOLDER through the server in each style, with the default options
    otherwise, so that the same requests are cache hits afterwards.

    One job at a time, each only once nobody waits for the model: warming never crowds out
    real requests. Exits 1 if any picture failed.

    Example: animegan-serve warm examples/ --style paprika --style face_paint_512_v2
    """
    settings = load_settings()
    pictures = list(images_in(folder, suffixes=IMAGE_SUFFIXES))  # pictures only
    if not pictures:
        raise click.UsageError(f"no image files in {folder}")
    with Client(url, api_key=settings.api_key) as client:
        served = client.styles()
        ready = [s["name"] for s in served if s["ready"]]
        chosen = list(styles_) or ready
        settings = settings.model_copy(
            update={"styles": [s["name"] for s in served], "default_style": served[0]["name"]}
        )
        try:
            option_sets = [StylizeOptions.build(settings, style=s, size=size) for s in chosen]
        except AnimeGANError as exc:
            raise click.UsageError(exc.message) from None

        def run(image: bytes, options: StylizeOptions) -> bool:
            return client.run_job(image, options)[1]

        total = len(pictures) * len(option_sets)
        with _progress(MofNCompleteColumn(), RateColumn(), TimeRemainingColumn()) as progress:
            task = progress.add_task("warming", total=total)

            def show(failure: str | None) -> None:
                if failure is not None:
                    progress.console.print(f"[red]{escape(failure)}", highlight=False)
                progress.advance(task)

            summary = warm_all(pictures, option_sets, run, client.line_queued, on_done=show)
    console().print(summary.line(), highlight=False)
    if summary.failures:
        sys.exit(1)


@main.command("convert")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@STYLE_OPTION
@SIZE_OPTION
@CROP_OPTION
@format_option(ImageFormat, "Output format (default: the default_format setting, png).")
@QUALITY_OPTION
@click.option(
    "--address",
    help="The Ray cluster to run on: auto, or host:port of its head (default: the cluster this "
    "machine is part of, or a local Ray started for this run).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Actors holding the model, one CPU each (default: one per CPU free in the cluster).",
)
@click.option(
    "--redis",
    "redis_url",
    help="Also write each result into the service's Redis tier at this URL, under the service's "
    "cache key, and take results found there instead of computing them.",
)
def convert_command(
    source: Path,
    target: Path,
    style: str | None,
    size: int | None,
    crop: str,
    format_: str | None,
    quality: int | None,
    address: str | None,
    concurrency: int | None,
    redis_url: str | None,
) -> None:
    """Convert every picture below SOURCE into TARGET on a Ray cluster (Ray Data), keeping each
    file's relative path and stem; files whose result exists are skipped.

    Failures are listed in TARGET/failures.jsonl and counted in the summary; exits 1 if any
    file failed.

    Example: animegan-serve convert photos/ anime/ --style hayao --address auto
    """
    settings = load_settings()
    try:
        options = StylizeOptions.build(
            settings, style=style, size=size, crop=crop, format=format_, quality=quality
        )
    except AnimeGANError as exc:
        raise click.UsageError(exc.message) from None
    if redis_url is not None:
        _check_redis(redis_url)
    spec = weights.registry(settings)[options.style]
    with console().status(f"checking the weights of {options.style}"):
        found = weights.ensure(spec, settings.weights_dir, timeout_s=settings.download_timeout_s)

    import ray  # slow imports, for this command only

    from .convert import Library, convert

    library = Library(source, target, options, settings, found.sha1, redis_url)
    ray.init(address=address)
    try:
        actors = concurrency or int(ray.available_resources().get("CPU", 0))
        if actors < 1:
            raise click.ClickException(
                "no CPU of the cluster is free for the model: free one or pass --concurrency"
            )
        report = convert(library, actors=actors)
    except ray.exceptions.RayError as exc:  # a pool actor that cannot start, a lost driver
        last = str(exc).strip().splitlines()[-1]
        raise click.ClickException(f"the pipeline stopped: {last}") from None
    finally:
        ray.shutdown()
    summary = report.summary
    if not (summary.done or summary.skipped or summary.failures or report.interrupted):
        raise click.UsageError(f"no picture files found under {source}")
    out = console()
    pace = report.line()
    out.print(summary.line(target) + (f"; {pace}" if pace else ""), highlight=False)
    if summary.failures:
        out.print(f"failures listed in {target / 'failures.jsonl'}", highlight=False)
    if report.interrupted:
        out.print("interrupted: finished results are in place, and the next run skips them")
        sys.exit(130)
    if summary.failures:
        sys.exit(1)


def _check_redis(url: str) -> None:
    """Refuse a Redis URL that does not answer now: the run is asked to warm it."""
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5).ping()
    except (ValueError, redis.RedisError) as exc:
        raise click.UsageError(f"--redis {url}: {exc}") from None


def file_options(
    settings: Settings,
    style: str | None,
    size: int | None,
    crop: str,
    format_: str | None,
    quality: int | None,
    face_style: str | None = None,
) -> OptionsFor:
    """Each file's options: `format_` where its kind takes it, else that kind's default; a
    `face_style` draws a picture's faces (a video's are not drawn again)."""
    kinds: tuple[Kind, ...] = ("image", "video")
    if format_ is not None and all(format_ not in FORMATS[kind] for kind in kinds):
        raise BadParameter(f"format {format_!r} is neither a picture's nor a video's")

    @functools.cache
    def built(kind: Kind) -> StylizeOptions:  # when a file of its kind is met: refusals then
        return StylizeOptions.build(
            settings,
            style=style,
            size=size,
            crop=crop,
            format=format_ if format_ in FORMATS[kind] else None,
            quality=quality,
            face_style=face_style if kind == "image" else None,
            kind=kind,
        )

    built("image")  # the options' mistakes are told before any file is read

    def options_for(path: Path) -> StylizeOptions:
        return built("video" if is_video_file(path) else "image")

    return options_for


def local_convert(settings: Settings, style: str) -> Convert:
    """An in-process engine holding just `style`."""
    from .core.engine import Engine  # torch import is slow: only when stylizing locally

    with console().status(f"loading style {style}"):
        engine = Engine.load(
            settings.model_copy(update={"styles": [style], "default_style": style})
        )
    status = engine.statuses[style]
    if not status.ready or status.sha1 is None:
        raise click.ClickException(status.error or f"style {style} did not load")
    sha1 = status.sha1

    def convert(data: bytes, options: StylizeOptions) -> Stylized:
        if kind_of(data) != "image":
            raise BadParameter("videos and animations are converted by a server: drop --local")
        pixels, cut = pipeline.decode_upload(data, options, settings)
        (stylized,) = engine.run(options.style, [pixels])
        picture = Picture(pipeline.encode_result(stylized, options, settings), cut)
        return Stylized(picture, cache_key(data, options, sha1), "miss", options)

    return convert


# -- the server's own view -----------------------------------------------------------------------


@main.command()
@URL_OPTION
def styles(url: str) -> None:
    """List the server's styles, whether each is ready, and why not.

    Example: animegan-serve styles --url http://127.0.0.1:8000
    """
    table = Table("style", "ready", "weights", "description")
    with Client(url, api_key=load_settings().api_key) as client:
        listed = client.styles()
    for style in listed:
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
    with Client(url, api_key=load_settings().api_key) as client:
        figures = client.stats()
    out = Console()
    cache = figures["cache"]
    out.print(_pairs("cluster cache", cache) if cache else "[yellow]cluster cache: unavailable")
    ingress = dict(figures["ingress"])
    redis = ingress.pop("redis", None)
    out.print(_pairs("this ingress replica", {**ingress.pop("hot_cache"), **ingress}))
    if redis is not None:
        out.print(_pairs("redis, as this ingress replica sees it", redis))
    model = figures["model"]
    sizes = ", ".join(f"{size}: {count}" for size, count in model["batch_sizes"].items()) or "none"
    out.print(
        _pairs(
            "model",
            {
                "replicas": model["replicas"],
                "inferences": model["inferences"],
                "batches": model["batches"],
                "batch sizes (size: count)": sizes,
            },
        )
    )
    table = Table(
        "replica",
        "node",
        "precision",
        "inferences",
        "batches",
        "batch cap",
        "queue depth",
        title="model replicas",
        title_justify="left",
    )
    for name, replica in sorted(model["per_replica"].items()):
        table.add_row(
            name,
            replica["node"][:8],
            replica["precision"],
            str(replica["inferences"]),
            str(replica["batches"]),
            str(replica["batch_policy"]["cap"]),
            str(replica["queue_depth"]),
        )
    out.print(table)


def _pairs(title: str, values: dict[str, object]) -> Table:
    table = Table("counter", "value", title=title, title_justify="left")
    for name, value in values.items():
        shown = f"{value:,}" if type(value) is int else str(value)  # not for True/False
        table.add_row(name.replace("_", " "), shown)
    return table


class RateColumn(ProgressColumn):
    """Files per second so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} files/s", style="progress.data.speed")


@contextmanager
def _progress(*columns: ProgressColumn) -> Iterator[Progress]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        *columns,
        console=console(),
    ) as progress:
        yield progress
