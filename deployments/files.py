"""Which image files a `stylize` run converts, where each result goes, and running them; and
`warm`'s run: pictures sent through the server only to leave their results in its cache."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import AnimeGANError, BadParameter
from .core.options import StylizeOptions
from .core.results import Stylized

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi"}
FILE_SUFFIXES = {
    "png": ".png",
    "jpeg": ".jpg",
    "webp": ".webp",
    "gif": ".gif",
    "mp4": ".mp4",
    "webm": ".webm",
}

# One file's bytes -> its result, or raises AnimeGANError.
Convert = Callable[[bytes, StylizeOptions], Stylized]
# A file's options: a video's formats are not a picture's.
OptionsFor = Callable[[Path], StylizeOptions]


@dataclass(frozen=True)
class Job:
    """One input file, its options and where its result goes."""

    source: Path
    target: Path
    options: StylizeOptions


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


@dataclass
class Summary:
    """What a run did, for its last line and its exit code."""

    done: int = 0
    skipped: int = 0
    cached: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self, output_dir: Path) -> str:
        return (
            f"{self.done} done, {self.skipped} skipped, {len(self.failures)} failed, "
            f"{self.cached} cached; results in {output_dir}"
        )


def plan_jobs(
    inputs: tuple[Path, ...], output_dir: Path, options_for: OptionsFor, *, recursive: bool = False
) -> list[Job]:
    """Files named directly, plus the image and video files inside named folders, with their
    options and targets.

    A folder's files keep their path below it; two inputs that would write the same result
    file are refused (BadParameter) rather than one silently overwriting the other.
    """
    jobs = []
    for item in inputs:
        if item.is_dir():
            found = sorted(images_in(item, recursive=recursive, exclude=output_dir))
        else:
            found = [item]
        for path in found:
            options = options_for(path)
            below = path.relative_to(item) if item.is_dir() else Path(path.name)
            jobs.append(
                Job(path, output_dir / below.with_suffix(FILE_SUFFIXES[options.format]), options)
            )
    sources: dict[Path, Path] = {}
    for job in jobs:
        other = sources.setdefault(job.target, job.source)
        if other != job.source:
            raise BadParameter(
                f"{other} and {job.source} would both be written to {job.target}; "
                "rename one or stylize them separately"
            )
    return jobs


def images_in(
    folder: Path,
    *,
    recursive: bool = False,
    exclude: Path | None = None,
    suffixes: set[str] = IMAGE_SUFFIXES | VIDEO_SUFFIXES,
) -> Iterator[Path]:
    """Files in `folder` (and its subfolders) with one of `suffixes`, leaving out hidden ones
    and `exclude`: folder by folder, each folder's files together and in name order, holding
    one folder's names at a time."""
    pending = [folder]
    while pending:
        subfolders = []
        for entry in sorted(pending.pop().iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if recursive and (exclude is None or entry.resolve() != exclude.resolve()):
                    subfolders.append(entry)
            elif entry.suffix.lower() in suffixes:
                yield entry
        pending.extend(reversed(subfolders))


def run_jobs(
    jobs: list[Job],
    convert: Convert,
    *,
    workers: int = 1,
    on_done: Callable[[Stylized | str], None] = lambda outcome: None,
) -> Summary:
    """Run every job, `workers` at a time; `on_done` sees each result or failure line."""
    summary = Summary()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        running = [pool.submit(run_job, job, convert) for job in jobs]
        for finished in as_completed(running):
            outcome = finished.result()
            if isinstance(outcome, str):
                summary.failures.append(outcome)
            else:
                summary.done += 1
                summary.cached += outcome.cache != "miss"
            on_done(outcome)
    return summary


def run_job(job: Job, convert: Convert) -> Stylized | str:
    """Convert one file: its result, or a one-line reason it failed."""
    try:
        result = convert(job.source.read_bytes(), job.options)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        job.target.write_bytes(result.picture.body)
    except AnimeGANError as exc:
        return f"{job.source}: {exc.code}: {exc.message}"
    except OSError as exc:
        return f"{job.source}: {exc.strerror or exc}"
    return result


@dataclass
class WarmSummary:
    """What a `warm` run did."""

    warmed: int = 0
    cached: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return f"{self.warmed} warmed, {self.cached} already cached, {len(self.failures)} failed"


def warm_all(
    pictures: list[Path],
    option_sets: list[StylizeOptions],
    run: Callable[[bytes, StylizeOptions], bool],
    line_queued: Callable[[], int],
    *,
    on_done: Callable[[str | None], None] = lambda failure: None,
    poll_s: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> WarmSummary:
    """Every picture with every option set, one at a time, each sent only once nobody waits for
    the model (`line_queued()` is 0), so warming never crowds out real requests. `run` sends
    one and says whether it was cached already; `on_done` hears each failure line or None."""
    summary = WarmSummary()
    for path in pictures:
        data = path.read_bytes()
        for options in option_sets:
            while line_queued() > 0:
                sleep(poll_s)
            try:
                cached = run(data, options)
            except AnimeGANError as exc:
                failure = f"{path} ({options.style}): {exc.code}: {exc.message}"
                summary.failures.append(failure)
                on_done(failure)
                continue
            summary.cached += cached
            summary.warmed += not cached
            on_done(None)
    return summary
