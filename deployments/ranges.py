"""HTTP range requests (RFC 9110, section 14) for stored results: a browser's `<video>` asks
for the clip in pieces, and seeks by asking for a piece further on.

One range per request (`bytes=a-b`, `bytes=a-`, `bytes=-n`), as browsers send; a request for
several ranges, or one that `If-Range` no longer matches, gets the whole body, which the
specification allows. A range that starts past the end is 416 with `Content-Range: bytes */N`.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def ranged(request: Request, body: bytes, media_type: str, headers: dict[str, str]) -> Response:
    """`body` whole (200), or the one range the request asks for (206, 416)."""
    headers = {**headers, "Accept-Ranges": "bytes"}
    asked = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if asked is None or (if_range is not None and if_range != headers.get("ETag")):
        return Response(body, media_type=media_type, headers=headers)
    span = byte_range(asked, len(body))
    if span is None:  # not one range we read: the whole body, as the specification allows
        return Response(body, media_type=media_type, headers=headers)
    start, end = span
    if start >= len(body) or start > end:
        headers["Content-Range"] = f"bytes */{len(body)}"
        return Response(status_code=416, headers=headers)
    headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
    return Response(body[start : end + 1], status_code=206, media_type=media_type, headers=headers)


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single `Range` of a body of `size` bytes; None if it is not
    one range of bytes."""
    match = RANGE.fullmatch(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # the last `last` bytes
        return max(0, size - int(last)), size - 1
    end = size - 1 if last == "" else min(int(last), size - 1)
    return int(first), end
