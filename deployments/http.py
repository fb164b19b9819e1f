"""The HTTP face of the service: routes, upload parsing, and the one place errors become JSON.

It depends only on the `Service` protocol below, which `core.service.StyleService` implements;
the tests drive it in-process through Starlette's TestClient with a plain stand-in. Route
layout lives here alone: every URL the service hands out (a job's result, an example's) is
built here.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .core.counted import counted
from .core.errors import AnimeGANError, BadParameter, Unauthorized
from .core.examples import Example
from .core.jobs import Admitted, idempotency_key, job_json
from .core.media import MEDIA_TYPES, Kind, Upload, kind_of, media_type_of
from .core.options import StylizeOptions
from .core.results import Picture, StyleStatus, Stylized
from .core.scheduler import JobView
from .core.settings import IPNetwork, Settings
from .core.upload_budget import UploadBudget
from .ranges import ranged
from .uploads import read_upload

Handler = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("ray.serve")

TRANSFORM_SIZE = 256  # what the seed service's /transform produced
RETRY_AFTER_S = 2  # what a 503 asks clients to wait when the refusal does not say
IMMUTABLE = "public, max-age=31536000, immutable"  # results are addressed by their content
PAGE = files(__package__).joinpath("page/index.html").read_text(encoding="utf-8")
# The page ships everything it needs inline and talks only to this origin.
PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src blob:; media-src 'self' blob:; connect-src 'self'; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


class Service(Protocol):
    """What the routes need from the service behind them."""

    settings: Settings

    async def process(
        self, image: Upload, options: StylizeOptions, client: str, kind: Kind = ...
    ) -> Stylized: ...

    async def submit_job(
        self,
        image: Upload,
        options: StylizeOptions,
        client: str,
        idempotency_key: str | None = ...,
        *,
        callback_url: str | None = ...,
        root: str = ...,
        kind: Kind = ...,
    ) -> Admitted: ...

    async def job_view(self, job_id: str) -> JobView: ...

    def follow_job(self, first: JobView) -> AsyncIterator[JobView | None]: ...

    async def cancel_job(self, job_id: str) -> None: ...

    async def result(self, key: str) -> Picture: ...

    def gallery(self) -> list[tuple[Example, dict[str, str]]]: ...

    def example(self, name: str) -> Example: ...

    async def styles(self, *, wait_s: float = ...) -> list[StyleStatus]: ...

    async def stats(self) -> dict[str, Any]: ...

    def observe(self, route: str, outcome: str, status: int, seconds: float) -> None: ...


def build_http_app(service: Service) -> Starlette:
    """The routes, bound to one service (one ingress replica)."""
    routes = Routes(service)
    api_key = service.settings.api_key.get_secret_value() if service.settings.api_key else None

    def api(handler: Handler, counted_as: str | None = None) -> Handler:
        """A route of the API: behind the key, and counted in the metrics if `counted_as`."""
        if counted_as is not None:
            handler = observed(service, counted_as, handler)
        return guarded(handler, api_key)

    return Starlette(
        routes=[
            Route("/", routes.page, methods=["GET"]),  # the page holds no data; it asks the key
            Route("/v1/stylize", api(routes.budgeted(routes.stylize), "stylize"), methods=["POST"]),
            Route("/v1/jobs", api(routes.budgeted(routes.submit_job), "jobs"), methods=["POST"]),
            Route("/v1/jobs/{job_id}", api(routes.job), methods=["GET"]),
            Route("/v1/jobs/{job_id}", api(routes.cancel_job), methods=["DELETE"]),
            Route("/v1/jobs/{job_id}/events", api(routes.job_events), methods=["GET"]),
            Route("/v1/results/{key}", api(routes.result, "results"), methods=["GET"]),
            Route("/v1/examples", api(routes.examples), methods=["GET"]),
            Route("/v1/examples/{name}", api(routes.example), methods=["GET"]),
            Route("/v1/styles", api(routes.styles), methods=["GET"]),
            Route("/v1/stats", api(routes.stats), methods=["GET"]),
            Route("/healthz", routes.healthz, methods=["GET"]),  # for load balancers: ok or not
            Route(
                "/transform", api(routes.budgeted(routes.transform), "transform"), methods=["POST"]
            ),
        ],
        exception_handlers={
            AnimeGANError: error_response,
            HTTPException: http_error_response,
            Exception: internal_error_response,
        },
    )


class Routes:
    """The endpoints, each turning a request into one call of the service and its answer."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.uploads = UploadBudget(
            self.settings.max_reading_bytes, max_upload_bytes=self.settings.max_upload_bytes
        )

    def budgeted(self, handler: Handler) -> Handler:
        """An upload route, within this replica's budget of upload bytes (refused unread)."""

        async def route(request: Request) -> Response:
            declared = request.headers.get("content-length")
            size = int(declared) if declared is not None and declared.isdigit() else None
            with self.uploads.reserve(size):
                return await handler(request)

        return route

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_POLICY})

    async def stylize(self, request: Request) -> Response:
        image, params = await read_upload(request, max_bytes=self.settings.max_upload_bytes)
        kind = kind_of(image)
        options = StylizeOptions.parse(params, self.settings, kind)
        result = await self.service.process(image, options, self.client_of(request), kind)
        return Response(
            result.picture.body,
            media_type=MEDIA_TYPES[result.options.format],
            headers={
                "ETag": f'"{result.key}"',
                "X-Cache": result.cache,
                "X-Style": result.options.style,
                **picture_headers(result.picture),
            },
        )

    async def transform(self, request: Request) -> Response:
        """The seed service's route: a multipart upload, a 256 px PNG back as hex in JSON."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise BadParameter("send the image as multipart/form-data in the field 'image'")
        image, params = await read_upload(request, max_bytes=self.settings.max_upload_bytes)
        options = StylizeOptions.parse(
            {"size": TRANSFORM_SIZE, **params, "format": "png"}, self.settings
        )
        result = await self.service.process(image, options, self.client_of(request))
        return JSONResponse({"image_base64": result.picture.body.hex()})

    async def submit_job(self, request: Request) -> Response:
        """A job; with an `Idempotency-Key` sent before (by this client, for a job still
        known), that job again: 200 with its state, nothing queued."""
        retry = idempotency_key(request.headers.get("idempotency-key"))
        image, params = await read_upload(
            request,
            max_bytes=self.settings.max_upload_bytes,
            max_video_bytes=self.settings.max_video_upload_bytes,
        )
        try:
            callback = params.pop("callback_url", None)
            kind = kind_of(image)
            options = StylizeOptions.parse(params, self.settings, kind)
        except BaseException:
            if isinstance(image, Path):
                image.unlink(missing_ok=True)
            raise
        root = root_of(request)
        admitted = await self.service.submit_job(
            image,
            options,
            self.client_of(request),
            retry,
            callback_url=None if callback is None else str(callback),
            root=root,
            kind=kind,
        )
        request.state.outcome = admitted.outcome
        view = admitted.view
        return JSONResponse(
            job_json(view, root),
            status_code=200 if admitted.replayed else 202,
            headers={"Location": f"{root}/v1/jobs/{view.id}"},
        )

    async def job(self, request: Request) -> Response:
        view = await self.service.job_view(request.path_params["job_id"])
        return JSONResponse(job_json(view, root_of(request)))

    async def cancel_job(self, request: Request) -> Response:
        await self.service.cancel_job(request.path_params["job_id"])
        return Response(status_code=204)

    async def job_events(self, request: Request) -> Response:
        first = await self.service.job_view(request.path_params["job_id"])  # 404 before streaming
        return StreamingResponse(
            event_stream(self.service.follow_job(first), root_of(request)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def result(self, request: Request) -> Response:
        """A stored result; a `Range` of it (206), as a browser's `<video>` asks to seek."""
        key = request.path_params["key"]
        picture = await self.service.result(key)
        headers = {"ETag": f'"{key}"', "Cache-Control": IMMUTABLE, **picture_headers(picture)}
        return ranged(request, picture.body, media_type_of(picture.body), headers)

    async def examples(self, request: Request) -> Response:
        root = root_of(request)
        return JSONResponse(
            [
                {
                    "name": example.name,
                    "original": f"{root}/v1/examples/{example.name}",
                    "results": {style: f"{root}/v1/results/{key}" for style, key in warmed.items()},
                }
                for example, warmed in self.service.gallery()
            ]
        )

    async def example(self, request: Request) -> Response:
        found = self.service.example(request.path_params["name"])
        return Response(
            found.data, media_type=found.media_type, headers={"Cache-Control": "no-cache"}
        )

    async def styles(self, request: Request) -> Response:
        return JSONResponse(
            [
                {
                    "name": s.name,
                    "description": s.description,
                    "ready": s.ready,
                    "verified": s.verified,
                    "error": s.error,
                }
                for s in await self.service.styles()
            ]
        )

    async def stats(self, request: Request) -> Response:
        return JSONResponse(await self.service.stats())

    async def healthz(self, request: Request) -> Response:
        ready = [s.name for s in await self.service.styles(wait_s=2.0) if s.ready]
        if ready:
            return JSONResponse({"status": "ok", "ready_styles": ready})
        return JSONResponse({"status": "starting", "ready_styles": []}, status_code=503)

    def client_of(self, request: Request) -> str:
        """The line's name for the sender (see `client_address` and `client_name`)."""
        peer = request.client.host if request.client else "unknown"
        forwarded = request.headers.get("x-forwarded-for")
        address = client_address(peer, forwarded, self.settings.trusted_proxies)
        return client_name(address, ipv6_prefix=self.settings.client_ipv6_prefix)


def picture_headers(picture: Picture) -> dict[str, str]:
    """Where a result was cut from (`X-Crop`) and where its drawn faces are (`X-Faces`)."""
    faces = picture.faces_header()
    crop = {"X-Crop": picture.cut.header()}
    return crop if faces is None else {**crop, "X-Faces": faces}


def observed(service: Service, route: str, handler: Handler) -> Handler:
    """`handler`, its answers counted and timed (`Service.observe`) under `route`; the outcome
    is the handler's `request.state.outcome`, else its X-Cache, else `ok`."""

    async def run(request: Request) -> Response:
        with counted(service.observe, route) as answer:
            response = await handler(request)
            answer.status = response.status_code
            answer.outcome = getattr(
                request.state, "outcome", response.headers.get("x-cache", "ok")
            )
        return response

    return run


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


def client_name(address: str, *, ipv6_prefix: int) -> str:
    """The client an address belongs to: an IPv4 address is one; an IPv6 address is its
    network of `ipv6_prefix` bits (a host is usually handed a whole /64, and any address in it
    is its own), written `2001:db8:1:2::/64`. An IPv4 address inside IPv6 counts as IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # "unknown", or a name a trusted proxy sent
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix}", strict=False))
    return str(ip)


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


async def event_stream(news: AsyncIterator[JobView | None], root: str) -> AsyncIterator[str]:
    """Server-sent events of a job: `queued` (place, ETA), `running`, a video's `progress`
    (frames done), then `done` or `failed`."""
    previous = None
    async for view in news:
        if view is None:
            yield ": keep-alive\n\n"
            continue
        data = job_json(view, root)
        event: str = view.status
        fields = {
            "queued": {"position": data["position"], "eta_s": data["eta_s"]},
            "running": {"eta_s": data["eta_s"]},
            "done": {"result": data["result"]},
            "failed": {"error": data["error"]},
        }[view.status]
        if view.kind == "video" and event in ("queued", "running"):
            fields.update(data["progress"])
            if event == previous == "running":
                event = "progress"
        previous = view.status
        yield f"event: {event}\ndata: {json.dumps(fields)}\n\n"


def guarded(handler: Handler, api_key: str | None) -> Handler:
    """`handler` behind `Authorization: Bearer <api_key>`, checked before the body is read."""
    if api_key is None:
        return handler
    expected = f"Bearer {api_key}".encode()

    async def check(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):  # constant time: no guessing by timing
            raise Unauthorized("this server needs an API key: send 'Authorization: Bearer <key>'")
        return await handler(request)

    return check


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
