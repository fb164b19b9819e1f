"""The HTTP face of the service: routes, upload parsing, and the one place errors become JSON.

It depends only on the `Service` protocol below, which the ingress deployment implements; the
tests drive it in-process through Starlette's TestClient with a plain stand-in.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message

from .core.errors import AnimeGANError, BadParameter, TooLarge, Unauthorized
from .core.examples import Example
from .core.imaging import MEDIA_TYPES, media_type_of
from .core.options import StylizeOptions
from .core.results import Picture, StyleStatus, Stylized
from .core.scheduler import JobView
from .core.settings import IPNetwork, Settings

Handler = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("ray.serve")

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and small fields around the image part
TRANSFORM_SIZE = 256  # what the seed service's /transform produced
RETRY_AFTER_S = 2  # what a 503 asks clients to wait when the refusal does not say
IMMUTABLE = "public, max-age=31536000, immutable"  # results are addressed by their content
PAGE = files(__package__).joinpath("page/index.html").read_text(encoding="utf-8")
# The page ships everything it needs inline and talks only to this origin.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class Service(Protocol):
    """What the routes need from the service behind them."""

    settings: Settings

    async def process(self, image: bytes, options: StylizeOptions, client: str) -> Stylized: ...

    async def submit_job(self, image: bytes, options: StylizeOptions, client: str) -> JobView: ...

    async def job_view(self, job_id: str) -> JobView: ...

    def follow_job(self, first: JobView) -> AsyncIterator[JobView | None]: ...

    async def cancel_job(self, job_id: str) -> None: ...

    async def result(self, key: str) -> Picture: ...

    def examples_view(self, root: str = ...) -> list[dict[str, Any]]: ...

    def example(self, name: str) -> Example: ...

    async def styles(self, *, wait_s: float = ...) -> list[StyleStatus]: ...

    async def stats(self) -> dict[str, Any]: ...

    def observe(self, route: str, outcome: str, status: int, seconds: float) -> None: ...


def build_http_app(service: Service) -> Starlette:
    """The routes, bound to one service (one ingress replica)."""
    settings = service.settings

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_POLICY})

    def client_of(request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        return client_address(peer, request.headers.get("x-forwarded-for"), trusted)

    async def stylize(request: Request) -> Response:
        image, params = await read_upload(request, max_bytes=settings.max_upload_bytes)
        options = StylizeOptions.parse(params, settings)
        result = await service.process(image, options, client_of(request))
        return Response(
            result.picture.body,
            media_type=MEDIA_TYPES[result.options.format],
            headers={
                "ETag": f'"{result.key}"',
                "X-Cache": result.cache,
                "X-Style": result.options.style,
                "X-Crop": result.picture.cut.header(),
            },
        )

    async def transform(request: Request) -> Response:
        image, params = await read_upload(request, max_bytes=settings.max_upload_bytes)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadParameter("send the image as multipart/form-data in the field 'image'")
        options = StylizeOptions.parse(
            {"size": TRANSFORM_SIZE, **params, "format": "png"}, settings
        )
        result = await service.process(image, options, client_of(request))
        return JSONResponse(
            {"image_base64": result.picture.body.hex()}
        )  # hex, as the seed service sent

    async def submit_job(request: Request) -> Response:
        image, params = await read_upload(request, max_bytes=settings.max_upload_bytes)
        options = StylizeOptions.parse(params, settings)
        view = await service.submit_job(image, options, client_of(request))
        request.state.outcome = "hit" if view.status == "done" else "queued"  # done: cached
        root = root_of(request)
        return JSONResponse(
            view.to_json(root), status_code=202, headers={"Location": f"{root}/v1/jobs/{view.id}"}
        )

    async def job(request: Request) -> Response:
        view = await service.job_view(request.path_params["job_id"])
        return JSONResponse(view.to_json(root_of(request)))

    async def cancel_job(request: Request) -> Response:
        await service.cancel_job(request.path_params["job_id"])
        return Response(status_code=204)

    async def job_events(request: Request) -> Response:
        first = await service.job_view(request.path_params["job_id"])  # 404 before streaming
        return StreamingResponse(
            event_stream(service.follow_job(first), root_of(request)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def result(request: Request) -> Response:
        key = request.path_params["key"]
        picture = await service.result(key)
        return Response(
            picture.body,
            media_type=media_type_of(picture.body),
            headers={
                "ETag": f'"{key}"',
                "Cache-Control": IMMUTABLE,
                "X-Crop": picture.cut.header(),
            },
        )

    async def examples(request: Request) -> Response:
        return JSONResponse(service.examples_view(root_of(request)))

    async def example(request: Request) -> Response:
        found = service.example(request.path_params["name"])
        return Response(
            found.data, media_type=found.media_type, headers={"Cache-Control": "no-cache"}
        )

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

    def observed(route: str, handler: Handler) -> Handler:
        """`handler`, its answers counted and timed (`Service.observe`) under `route`; the
        outcome is the handler's `request.state.outcome`, else its X-Cache, else `ok`."""

        async def run(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response = await handler(request)
            except AnimeGANError as exc:
                service.observe(route, exc.code, exc.http_status, time.perf_counter() - start)
                raise
            except Exception:
                service.observe(route, "internal", 500, time.perf_counter() - start)
                raise
            outcome = getattr(request.state, "outcome", response.headers.get("x-cache", "ok"))
            service.observe(route, outcome, response.status_code, time.perf_counter() - start)
            return response

        return run

    trusted = settings.trusted_proxies
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return Starlette(
        routes=[
            Route("/", page, methods=["GET"]),  # the page holds no data; it asks for the key
            Route("/v1/stylize", guarded(observed("stylize", stylize), key), methods=["POST"]),
            Route("/v1/jobs", guarded(observed("jobs", submit_job), key), methods=["POST"]),
            Route("/v1/jobs/{job_id}", guarded(job, key), methods=["GET"]),
            Route("/v1/jobs/{job_id}", guarded(cancel_job, key), methods=["DELETE"]),
            Route("/v1/jobs/{job_id}/events", guarded(job_events, key), methods=["GET"]),
            Route("/v1/results/{key}", guarded(observed("results", result), key), methods=["GET"]),
            Route("/v1/examples", guarded(examples, key), methods=["GET"]),
            Route("/v1/examples/{name}", guarded(example, key), methods=["GET"]),
            Route("/v1/styles", guarded(styles, key), methods=["GET"]),
            Route("/v1/stats", guarded(stats, key), methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),  # for load balancers: says only ok or not
            Route("/transform", guarded(observed("transform", transform), key), methods=["POST"]),
        ],
        exception_handlers={
            AnimeGANError: error_response,
            HTTPException: http_error_response,
            Exception: internal_error_response,
        },
    )


def root_of(request: Request) -> str:
    """The application's route prefix (`/crowd`, or "" at the root): job URLs carry it."""
    return str(request.scope.get("root_path", ""))


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[IPNetwork]) -> str:
    """Who sent the request, for fairness: `peer`, or, while the hop is a trusted proxy, the
    X-Forwarded-For entry before it (the rightmost address that is not a trusted proxy).

    The Serve proxy has already taken this step once for peers it trusts (127.0.0.1 unless
    `FORWARDED_ALLOW_IPS` says otherwise), replacing the peer with the last entry; that entry is
    then the `peer` here, and the walk goes on from it.
    """
    hops = [hop.strip() for hop in forwarded_for.split(",")] if forwarded_for else []
    if peer in hops:  # the Serve proxy used the entries up to this one
        del hops[len(hops) - 1 - hops[::-1].index(peer) :]
    client = peer
    while hops and _is_trusted(client, trusted):
        client = hops.pop()
    return client


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


async def event_stream(news: AsyncIterator[JobView | None], root: str) -> AsyncIterator[str]:
    """Server-sent events of a job: `queued` (place, ETA), `running`, then `done` or `failed`."""
    async for view in news:
        if view is None:
            yield ": keep-alive\n\n"
            continue
        data = view.to_json(root)
        fields = {
            "queued": {"position": data["position"], "eta_s": data["eta_s"]},
            "running": {"eta_s": data["eta_s"]},
            "done": {"result": data["result"]},
            "failed": {"error": data["error"]},
        }[view.status]
        yield f"event: {view.status}\ndata: {json.dumps(fields)}\n\n"


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
    headers: dict[str, str] | None = None
    if exc.http_status in (429, 503):
        retry_after = exc.retry_after_s if exc.retry_after_s is not None else RETRY_AFTER_S
        headers = {"Retry-After": str(math.ceil(retry_after))}
    elif exc.http_status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
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
