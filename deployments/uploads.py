"""An upload read off an HTTP request: capped while it streams, its kind told from its first
bytes, and a video past the picture limit spooled to a file instead of the heap.

A picture (or a short video) arrives as bytes, as before; a video of up to
`max_video_upload_bytes` goes to a file in the system's temporary folder, which then belongs
to whoever the upload is handed to (the job that runs it removes it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message

from .core.errors import BadParameter, TooLarge
from .core.media import CHUNK_BYTES, HEAD_BYTES, Upload, is_video

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and small fields around the image part


async def read_upload(
    request: Request, *, max_bytes: int, max_video_bytes: int | None = None
) -> tuple[Upload, dict[str, Any]]:
    """(upload, parameters) from a raw body or a multipart form. The body is capped at
    `max_bytes`, or for a video (where `max_video_bytes` is given) at that, spooled to a file."""
    content_type = request.headers.get("content-type", "")
    overhead = MULTIPART_OVERHEAD if content_type.startswith("multipart/") else 0
    most = max(max_bytes, max_video_bytes or 0) + overhead
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > most:
        limits = _limits(max_bytes, max_video_bytes)
        raise TooLarge(f"the upload is {int(declared):,} bytes; the limit is {limits}")
    params: dict[str, Any] = dict(request.query_params)
    multipart = content_type.startswith("multipart/form-data")
    body = await _read_body(request, max_bytes + overhead, most, spool_any=multipart)
    if not multipart:
        return body, params
    return await _read_form(request, body, params, max_bytes, max_video_bytes)


async def _read_body(request: Request, limit: int, most: int, *, spool_any: bool) -> Upload:
    """The body as bytes up to `limit`; past it (a video's, or any multipart body), in a
    spool file up to `most`."""
    body = bytearray()
    spool: Any = None
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > most:
                raise TooLarge(f"the upload is over the limit of {most:,} bytes")
            if spool is not None:
                spool.write(chunk)
                continue
            body += chunk
            if len(body) > limit:
                if limit == most or not (spool_any or is_video(bytes(body[:HEAD_BYTES]))):
                    raise TooLarge(f"the upload is over the limit of {limit:,} bytes")
                spool = _new_spool()
                spool.write(body)
                body = bytearray()
    except BaseException:
        if spool is not None:
            spool.close()
            os.unlink(spool.name)
        raise
    if spool is None:
        return bytes(body)
    spool.close()
    return Path(spool.name)


def _new_spool() -> Any:
    """A file of our own, in the temporary folder, kept until its upload is done with."""
    return tempfile.NamedTemporaryFile(prefix="animegan-upload-", delete=False)


async def _read_form(
    request: Request,
    body: Upload,
    params: dict[str, Any],
    max_bytes: int,
    max_video_bytes: int | None,
) -> tuple[Upload, dict[str, Any]]:
    async with _replayed(request, body) as replayed:
        try:
            form = await replayed.form(max_files=1, max_fields=16)
        except MultiPartException as exc:
            raise BadParameter(f"the multipart body is malformed ({exc.message})") from None
        except HTTPException as exc:  # Starlette's refusal of too many files or fields
            raise BadParameter(f"the multipart form is refused ({exc.detail})") from None
    try:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise BadParameter("the multipart form has no file field 'image'")
        params.update({k: v for k, v in form.items() if k != "image" and isinstance(v, str)})
        return await _part(image, max_bytes, max_video_bytes), params
    finally:
        await form.close()  # the parser's spooled temporary files


async def _part(image: UploadFile, max_bytes: int, max_video_bytes: int | None) -> Upload:
    """The file part: bytes within `max_bytes`, else a video's spool file."""
    size = image.size or 0
    if size <= max_bytes:
        return await image.read()
    head = await image.read(HEAD_BYTES)
    if max_video_bytes is None or not is_video(head) or size > max_video_bytes:
        raise TooLarge(
            f"the upload is {size:,} bytes; the limit is {_limits(max_bytes, max_video_bytes)}"
        )
    await image.seek(0)
    spool = _new_spool()
    with spool:
        shutil.copyfileobj(image.file, spool, CHUNK_BYTES)
    return Path(spool.name)


@contextlib.asynccontextmanager
async def _replayed(request: Request, body: Upload) -> AsyncIterator[Request]:
    """The request again, its body read from `body` (a spool file in chunks, then removed)."""
    if isinstance(body, bytes):

        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        yield Request(request.scope, replay)
        return
    with body.open("rb") as file:

        async def stream() -> Message:
            chunk = file.read(CHUNK_BYTES)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

        try:
            yield Request(request.scope, stream)
        finally:
            body.unlink(missing_ok=True)


def _limits(max_bytes: int, max_video_bytes: int | None) -> str:
    if max_video_bytes is None:
        return f"{max_bytes:,} bytes"
    return f"{max_bytes:,} bytes for a picture, {max_video_bytes:,} for a video"
