"""Which image files a `stylize` run converts, where each result goes, and running them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import AnimeGANError, BadParameter
from .core.options import StylizeOptions
from .core.results import Stylized

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
FILE_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}

# One image file's bytes -> its result, or raises AnimeGANError.
Convert = Callable[[bytes, StylizeOptions], Stylized]


@dataclass(frozen=True)
class Job:
    """One input file and where its result goes."""

    source: Path
    target: Path


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
    inputs: tuple[Path, ...], output_dir: Path, options: StylizeOptions, *, recursive: bool = False
) -> list[Job]:
    """Files named directly, plus the image files inside named folders, with their targets.

    A folder's files keep their path below it; two inputs that would write the same result
    file are refused (BadParameter) rather than one silently overwriting the other.
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
            raise BadParameter(
                f"{other} and {job.source} would both be written to {job.target}; "
                "rename one or stylize them separately"
            )
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
    jobs: list[Job],
    options: StylizeOptions,
    convert: Convert,
    *,
    workers: int = 1,
    on_done: Callable[[Stylized | str], None] = lambda outcome: None,
) -> Summary:
    """Run every job, `workers` at a time; `on_done` sees each result or failure line."""
    summary = Summary()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        running = [pool.submit(run_job, job, options, convert) for job in jobs]
        for finished in as_completed(running):
            outcome = finished.result()
            if isinstance(outcome, str):
                summary.failures.append(outcome)
            else:
                summary.done += 1
                summary.cached += outcome.cache != "miss"
            on_done(outcome)
    return summary


def run_job(job: Job, options: StylizeOptions, convert: Convert) -> Stylized | str:
    """Convert one file: its result, or a one-line reason it failed."""
    try:
        result = convert(job.source.read_bytes(), options)
        job.target.parent.mkdir(parents=True, exist_ok=True)
        job.target.write_bytes(result.picture.body)
    except AnimeGANError as exc:
        return f"{job.source}: {exc.code}: {exc.message}"
    except OSError as exc:
        return f"{job.source}: {exc.strerror or exc}"
    return result
