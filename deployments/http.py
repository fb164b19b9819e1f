"""The HTTP face of the service: routes, upload parsing, and the one place errors become JSON.

It depends only on the `Service` protocol below, which the ingress deployment implements; the
tests drive it in-process through Starlette's TestClient with a plain stand-in.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from importlib.resources import files
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from .core.errors import AnimeGANError, BadParameter, TooLarge, Unauthorized
from .core.imaging import MEDIA_TYPES
from .core.options import StylizeOptions
from .core.results import StyleStatus, Stylized
from .core.settings import Settings

Handler = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("ray.serve")

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and small fields around the image part
TRANSFORM_SIZE = 256  # what the seed service's /transform produced
RETRY_AFTER_S = 2  # what a 503 asks clients to wait
PAGE = files(__package__).joinpath("page/index.html").read_text(encoding="utf-8")
# The page ships everything it needs inline and talks only to this origin.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class Service(Protocol):
    """What the routes need from the service behind them."""

    settings: Settings

    async def process(self, image: bytes, options: StylizeOptions) -> Stylized: ...

    async def styles(self, *, wait_s: float = ...) -> list[StyleStatus]: ...

    async def stats(self) -> dict[str, Any]: ...


def build_http_app(service: Service) -> Starlette:
    """The routes, bound to one service (one ingress replica)."""
    settings = service.settings

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_POLICY})

    async def stylize(request: Request) -> Response:
        image, params = await read_upload(request, max_bytes=settings.max_upload_bytes)
        result = await service.process(image, StylizeOptions.parse(params, settings))
        return Response(
            result.body,
            media_type=MEDIA_TYPES[result.options.format],
            headers={
                "ETag": f'"{result.key}"',
                "X-Cache": result.cache,
                "X-Style": result.options.style,
            },
        )

    async def transform(request: Request) -> Response:
        image, params = await read_upload(request, max_bytes=settings.max_upload_bytes)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadParameter("send the image as multipart/form-data in the field 'image'")
        options = StylizeOptions.parse(
            {"size": TRANSFORM_SIZE, **params, "format": "png"}, settings
        )
        result = await service.process(image, options)
        return JSONResponse({"image_base64": result.body.hex()})  # hex, as the seed service sent

    async def styles(request: Request) -> Response:
        return JSONResponse(
            [
                {
                    "name": s.name,
                    "description": s.description,
                    "ready": s.ready,
                    "verified": s.verified,
                    "error": s.error,
                }
                for s in await service.styles()
            ]
        )

    async def stats(request: Request) -> Response:
        return JSONResponse(await service.stats())

    async def healthz(request: Request) -> Response:
        ready = [s.name for s in await service.styles(wait_s=2.0) if s.ready]
        if ready:
            return JSONResponse({"status": "ok", "ready_styles": ready})
        return JSONResponse({"status": "starting", "ready_styles": []}, status_code=503)

    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),  # the page holds no data; it asks for the key
            Route("/v1/stylize", guarded(stylize, key), methods=["POST"]),
            Route("/v1/styles", guarded(styles, key), methods=["GET"]),
            Route("/v1/stats", guarded(stats, key), methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),  # for load balancers: says only ok or not
            Route("/transform", guarded(transform, key), methods=["POST"]),
        ],
        exception_handlers={
            AnimeGANError: error_response,
            HTTPException: http_error_response,
            Exception: internal_error_response,
        },
    )


def guarded(handler: Handler, key: str | None) -> Handler:
    """`handler` behind `Authorization: Bearer <key>`, checked before the body is read."""
    if key is None:
        return handler
    expected = f"Bearer {key}".encode()

    async def check(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: no guessing by timing
            raise Unauthorized("this server needs an API key: send 'Authorization: Bearer <key>'")
        return await handler(request)

    return check


async def read_upload(request: Request, *, max_bytes: int) -> tuple[bytes, dict[str, Any]]:
    """(image bytes, parameters) from a raw body or a multipart form; the body is size-capped."""
    content_type = request.headers.get("content-type", "")
    limit = max_bytes + (MULTIPART_OVERHEAD if content_type.startswith("multipart/") else 0)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the upload is {int(declared):,} bytes; the limit is {max_bytes:,} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"the upload is over the limit of {max_bytes:,} bytes")
    params: dict[str, Any] = dict(request.query_params)
    if not content_type.startswith("multipart/form-data"):
        return bytes(body), params
    image, params = await _read_form(request, bytes(body), params)
    if len(image) > max_bytes:
        raise TooLarge(f"the upload is {len(image):,} bytes; the limit is {max_bytes:,} bytes")
    return image, params


async def _read_form(
    request: Request, body: bytes, params: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except MultiPartException as exc:
        raise BadParameter(f"the multipart body is malformed ({exc.message})") from None
    except HTTPException as exc:  # Starlette's refusal of too many files or fields
        raise BadParameter(f"the multipart form is refused ({exc.detail})") from None
    try:
        image = form.get("image")
        if not isinstance(image, UploadFile):
            raise BadParameter("the multipart form has no file field 'image'")
        data = await image.read()
        params.update({k: v for k, v in form.items() if k != "image" and isinstance(v, str)})
        return data, params
    finally:
        await form.close()  # the parser's spooled temporary files


async def error_response(request: Request, exc: Exception) -> Response:
    """Every refusal, as `{"error": {"code", "message"}}` with its status."""
    assert isinstance(exc, AnimeGANError)
    headers = {
        503: {"Retry-After": str(RETRY_AFTER_S)},
        401: {"WWW-Authenticate": "Bearer"},
    }.get(exc.http_status)
    return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)


async def http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": {"code": code, "message": str(exc.detail)}},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def internal_error_response(request: Request, exc: Exception) -> Response:
    """A fault of ours (a replica died mid-request, say): logged, and still a JSON answer."""
    log.error("request to %s failed: %s: %s", request.url.path, type(exc).__name__, exc)
    return JSONResponse(
        {"error": {"code": "internal", "message": "the service failed this request; retry it"}},
        status_code=500,
    )
