"""`convert`: a library of pictures through the engine on a Ray cluster, as a Ray Data pipeline.

list (one streamed walk of SRC) -> read and decode (tasks) -> stylize, encode and write (a pool
of actors holding the engine, one torch thread each) -> one small row per file to the driver.
The image code is the service's (`pipeline.decode_upload`, the engine, `pipeline.encode_result`)
and so is the cache key, so a result can be written into the service's Redis tier.

A result is written to a temporary file in DST/.partial, then renamed to its place: a file under
its final name is always complete, which is what lets a second run skip it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data.block import BlockMetadata

from .core import pipeline
from .core.cache_key import cache_key
from .core.errors import AnimeGANError, BadParameter, FileError, StyleNotReady, UnsupportedFormat
from .core.imaging import Cut
from .core.media import kind_of
from .core.options import StylizeOptions
from .core.redis_tier import RedisTier
from .core.results import Picture
from .core.settings import Settings
from .files import FILE_SUFFIXES, IMAGE_SUFFIXES, Summary, images_in

PARTIAL = ".partial"  # DST's folder of results being written (hidden: never listed)
FAILURES = "failures.jsonl"
LISTED_PER_BLOCK = 32  # paths per block of the listing
DECODED_PER_TASK = 4  # files each decode task reads and decodes
STYLIZED_PER_CALL = 1  # pictures per actor call: each is inferred alone (batching is slower here)
# A pool actor's memory beyond its largest inference: torch, the engine and Ray's worker.
ACTOR_BASE_BYTES = 700 * 1024 * 1024
# Every column of a row, at every stage (`pixels` only between decoding and stylizing).
COLUMNS = ("source", "state", "code", "message", "key", "cut", "height", "width", "node")


@dataclass(frozen=True)
class Library:
    """What a run converts: the files below `source`, with `options`, into `target`."""

    source: Path
    target: Path
    options: StylizeOptions
    settings: Settings
    weights_sha1: str  # of `options.style`: part of every cache key
    redis_url: str | None = None

    def result_of(self, relative: str) -> Path:
        """Where the result of the file at `relative` (below `source`) goes."""
        return self.target / Path(relative).with_suffix(FILE_SUFFIXES[self.options.format])

    def redis(self) -> RedisTier | None:
        if self.redis_url is None:
            return None
        return RedisTier.for_settings(self.settings, self.redis_url)


# -- listing ----------------------------------------------------------------------------------


def listing(library: Library) -> Iterator[dict[str, str]]:
    """A row per picture file below `source` (DST left out), folder by folder: `todo`, or
    `skipped` where its result exists, or `failed` where an earlier file of its folder takes
    its result's name (`a.jpg` and `a.png`, both to `a.png`)."""
    folder, taken = None, dict[str, str]()  # this folder's result names -> their files
    for path in images_in(
        library.source, recursive=True, exclude=library.target, suffixes=IMAGE_SUFFIXES
    ):
        relative = str(path.relative_to(library.source))
        if path.parent != folder:
            folder, taken = path.parent, {}
        result = library.result_of(relative)
        if (other := taken.setdefault(result.name, relative)) != relative:
            clash = f"{other} is written to {result} already; rename one and convert it again"
            yield _row(relative, "failed", BadParameter.code, clash)
            continue
        yield _row(relative, "skipped" if result.exists() else "todo")


class Listing(ray.data.Datasource):
    """`listing` as a dataset: one read task yields it a block at a time, so the driver never
    holds the list of a library's files."""

    def __init__(self, library: Library) -> None:
        self.library = library

    def estimate_inmemory_data_size(self) -> None:
        return None  # unknown until walked

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ray.data.ReadTask]:
        library = self.library

        def read() -> Iterator[pa.Table]:
            rows = []
            for row in listing(library):
                rows.append(row)
                if len(rows) == LISTED_PER_BLOCK:
                    yield pa.Table.from_pylist(rows)
                    rows = []
            if rows:
                yield pa.Table.from_pylist(rows)

        unknown = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ray.data.ReadTask(read, unknown)]


def _row(source: str, state: str, code: str = "", message: str = "") -> dict[str, str]:
    return {"source": source, "state": state, "code": code, "message": message}


# -- decoding (Ray Data tasks) ----------------------------------------------------------------


def decode_batch(batch: dict[str, np.ndarray], library: Library) -> dict[str, Any]:
    """Read and decode each `todo` file of the batch; a result already in Redis is written
    at once (`cached`); a file that cannot be read or decoded is `failed`."""
    rows = _rows(batch)
    pixels: list[bytes] = []
    found: dict[int, tuple[bytes, str]] = {}  # row -> (upload, key)
    for i, row in enumerate(rows):
        row.update(key="", cut="", height=0, width=0, node="")
        if row["state"] == "todo":
            try:
                data = (library.source / row["source"]).read_bytes()
            except OSError as exc:
                _failed(row, FileError(f"cannot read it: {exc.strerror or exc}"))
                continue
            found[i] = data, cache_key(data, library.options, library.weights_sha1)
    cached = _lookup({i: key for i, (_, key) in found.items()}, library)
    for i, row in enumerate(rows):
        pixels.append(b"")
        if i not in found:
            continue
        data, row["key"] = found[i]
        if i in cached:
            _finish(row, library, cached[i], "cached")
            continue
        try:
            if kind_of(data) != "image":
                raise UnsupportedFormat("an animation is converted by the service, as a job")
            decoded, cut = pipeline.decode_upload(data, library.options, library.settings)
        except AnimeGANError as exc:
            _failed(row, exc)
            continue
        row.update(cut=cut.header(), height=decoded.shape[0], width=decoded.shape[1])
        pixels[-1] = decoded.tobytes()
    return {**_columns(rows), "pixels": pixels}


def _lookup(keys: dict[int, str], library: Library) -> dict[int, Picture]:
    """The results Redis holds for these keys (none without `redis_url`)."""
    tier = library.redis()
    if tier is None or not keys:
        return {}

    async def get_all() -> dict[int, Picture]:
        try:
            got = await asyncio.gather(*(tier.get(key) for key in keys.values()))
        finally:
            await tier.close()
        return {i: picture for i, picture in zip(keys, got, strict=True) if picture is not None}

    return asyncio.run(get_all())


# -- stylizing (a pool of Ray Data actors) ----------------------------------------------------


class Stylizer:
    """A pool actor: the engine with the run's one style, on one torch thread, as a model
    replica holds it; each decoded picture is stylized, encoded and written."""

    def __init__(self, library: Library) -> None:
        from .core.engine import Engine

        self.library = library
        style = library.options.style
        settings = library.settings.model_copy(
            update={
                "styles": [style],
                "default_style": style,
                "threads": 1,
                "default_size": library.options.size,  # its warm-up builds this size's kernels
            }
        )
        self.engine = Engine.load(settings)
        status = self.engine.statuses[style]
        if not status.ready:
            raise StyleNotReady(f"style {style!r} is not ready on this node: {status.error}")
        if status.sha1 != library.weights_sha1:  # the keys would name another model's results
            raise StyleNotReady(f"the weights of {style!r} on this node differ from the driver's")
        self.node = ray.get_runtime_context().get_node_id()
        self.redis = library.redis()
        self.loop = asyncio.new_event_loop()  # the Redis tier's client lives on one loop

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows = _rows(batch)
        for row, pixels in zip(rows, batch["pixels"], strict=True):
            if row["state"] != "todo":
                continue
            row["node"] = self.node
            shape = (int(row["height"]), int(row["width"]), 3)
            try:
                picture = self.stylize(np.frombuffer(pixels, np.uint8).reshape(shape), row["cut"])
            except AnimeGANError as exc:
                _failed(row, exc)
                continue
            _finish(row, self.library, picture, "done")
            if self.redis is not None and row["state"] == "done":
                self.loop.run_until_complete(self.redis.put(row["key"], picture))
        return _columns(rows)

    def stylize(self, pixels: np.ndarray, cut: str) -> Picture:
        options, settings = self.library.options, self.library.settings
        (stylized,) = self.engine.run(options.style, [pixels])
        return Picture(pipeline.encode_result(stylized, options, settings), Cut.parse(cut))


def _finish(row: dict[str, Any], library: Library, picture: Picture, state: str) -> None:
    """Write the row's result under its final name, atomically, and mark the row `state`."""
    target = library.result_of(row["source"])
    try:
        write_atomically(target, picture.body, library.target / PARTIAL)
    except OSError as exc:
        _failed(row, FileError(f"cannot write {target}: {exc.strerror or exc}"))
        return
    row["state"] = state


def _failed(row: dict[str, Any], error: AnimeGANError) -> None:
    row.update(state="failed", code=error.code, message=error.message)


def write_atomically(target: Path, body: bytes, partial: Path) -> None:
    """`body` into `target`, written to `partial` first: `target` never holds part of it.
    `partial` is the driver's to make and remove: once it is gone, a write fails."""
    temporary = partial / f"{uuid.uuid4().hex}{target.suffix}"
    try:
        temporary.write_bytes(body)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def clear_partial(partial: Path) -> None:
    """Remove `partial` and what is in it. Renamed first: a pool actor still finishing a call
    after a Ctrl-C (Ray Data drops its handle; it ends when the call does) finds no folder to
    write in, so no file can appear in it while it is removed."""
    doomed = partial.with_name(f"{partial.name}-{uuid.uuid4().hex}")  # hidden: never listed
    try:
        os.rename(partial, doomed)
    except FileNotFoundError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


def _rows(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """A batch's rows (its pixels left out)."""
    names = [name for name in batch if name != "pixels"]
    columns = zip(*(batch[name] for name in names), strict=True)
    return [dict(zip(names, values, strict=True)) for values in columns]


def _columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {name: [row[name] for row in rows] for name in COLUMNS}


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Report:
    """What a run did: the stylize command's summary, with its pace and where it ran."""

    summary: Summary = field(default_factory=Summary)
    nodes: set[str] = field(default_factory=set)
    first_s: float = 0.0  # from the start to the first result: the pipeline's start-up
    last_s: float = 0.0  # to the last result
    elapsed_s: float = 0.0
    interrupted: bool = False  # by a Ctrl-C

    def steady_rate(self) -> float:
        """Results per second from the first to the last: the pace once started."""
        span = self.last_s - self.first_s
        return (self.summary.done - 1) / span if span > 0 else 0.0

    def line(self) -> str:
        """The pace, for the summary: empty where nothing was converted."""
        if not self.summary.done:
            return ""
        overall = self.summary.done / self.elapsed_s
        return (
            f"{self.steady_rate():.2f} images/s after a start-up of {self.first_s:.1f} s "
            f"({overall:.2f} overall) on {len(self.nodes)} node(s)"
        )


def convert(
    library: Library,
    *,
    actors: int,
    on_row: Callable[[dict[str, Any]], None] = lambda row: None,
) -> Report:
    """Run the pipeline on the connected Ray cluster with `actors` pool actors; failures go to
    DST/failures.jsonl as they arrive. A Ctrl-C stops it (see `clear_partial`): the report
    says so."""
    context = ray.data.DataContext.get_current()
    context.target_max_block_size = 64 * 1024  # small blocks stream: a file's pixels are one
    partial = library.target / PARTIAL
    clear_partial(partial)  # what a run killed outright left
    partial.mkdir(parents=True)
    failures = library.target / FAILURES
    failures.unlink(missing_ok=True)  # a run reports its own

    size = library.options.size
    from .core.engine import BYTES_PER_PIXEL  # torch: in the driver, not in the decode tasks

    largest = size * size * BYTES_PER_PIXEL["fp32"]
    memory = ACTOR_BASE_BYTES + min(library.settings.inference_memory_bytes, largest)
    dataset = (
        ray.data.read_datasource(Listing(library), override_num_blocks=1, num_cpus=0)
        .map_batches(
            decode_batch,
            fn_kwargs={"library": library},
            batch_size=DECODED_PER_TASK,
            batch_format="numpy",
            num_cpus=0,  # next to the actors; the time they take is a few percent of theirs
        )
        .map_batches(
            Stylizer,
            fn_constructor_kwargs={"library": library},
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=STYLIZED_PER_CALL,
            batch_format="numpy",
            num_cpus=1,
            memory=memory,
        )
    )
    report, start = Report(), time.perf_counter()
    try:
        with failures.open("a") as failed:
            for row in dataset.iter_rows():
                if row["state"] in ("done", "cached"):
                    report.last_s = time.perf_counter() - start
                    report.first_s = report.first_s or report.last_s
                _count(report, row, failed)
                on_row(row)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        report.elapsed_s = time.perf_counter() - start
        clear_partial(partial)
        if failures.exists() and failures.stat().st_size == 0:
            failures.unlink()
    return report


def _count(report: Report, row: dict[str, Any], failed: Any) -> None:
    summary = report.summary
    if row["state"] == "failed":
        summary.failures.append(f"{row['source']}: {row['code']}: {row['message']}")
        entry = {"path": row["source"], "code": row["code"], "message": row["message"]}
        failed.write(json.dumps(entry, ensure_ascii=False) + "\n")
        failed.flush()
    elif row["state"] == "skipped":
        summary.skipped += 1
    else:
        summary.done += 1
        summary.cached += row["state"] == "cached"
        if row["node"]:
            report.nodes.add(row["node"])
