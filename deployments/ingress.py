"""The ingress deployment: the front door for HTTP (see `http.py`) and for Python handles.

Serve calls any attribute a handle names (a leading underscore hides nothing), so the class's
methods are exactly the handle API, plus the hook Serve calls to build the HTTP app. Everything
else is the plain `StyleService` it wires over the cluster's actors.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette

from .actors import INLINE_OBJECTS
from .cache import CacheClient
from .core.counted import counted
from .core.errors import TooLarge
from .core.examples import load_examples
from .core.jobs import idempotency_key as checked_key
from .core.jobs import job_json
from .core.media import Kind, kind_of
from .core.options import StylizeOptions
from .core.redis_tier import RedisTier
from .core.service import StyleService
from .core.settings import Settings
from .http import build_http_app
from .model_client import ModelClient
from .scheduler import SchedulerClient
from .telemetry import IngressMetrics

CALL_TIMEOUT_S = 2.0  # a named actor slower than this is treated as down
HANDLE_CLIENT = "handle"  # Python handle callers share one place in the line's rotation


@serve.deployment(
    # I/O and hashing; the model replicas own the CPUs.
    ray_actor_options={"num_cpus": 0, "runtime_env": INLINE_OBJECTS},
    # Requests waiting in the line and open job event streams are cheap coroutines here.
    max_ongoing_requests=4096,
    max_queued_requests=512,
    backpressure_config={"retry_after_s": 2},
)
@serve.ingress()
class Ingress:
    """Keys each request, asks the caches, and on a miss runs the model deployment."""

    def __init__(self, model: DeploymentHandle, settings: Settings) -> None:
        self.service = wire(model, settings)
        self.service.start()

    def __serve_build_asgi_app__(self) -> Starlette:
        return build_http_app(self.service)

    async def stylize(
        self,
        image: bytes,
        style: str | None = None,
        size: int | str | None = None,
        crop: str = "none",
        format: str | None = None,
        quality: int | None = None,
        face_style: str | None = None,
    ) -> bytes:
        """The encoded picture (an animated picture of up to `max_sync_frames` frames: the
        animation); raises the core's typed errors."""
        with counted(self.service.observe, "handle") as answer:
            kind, options = handle_options(
                self.service.settings, image, style, size, crop, format, quality, face_style
            )
            result = await self.service.process(image, options, HANDLE_CLIENT, kind)
            answer.outcome = result.cache
        return result.picture.body

    async def submit(
        self,
        image: bytes,
        style: str | None = None,
        size: int | str | None = None,
        crop: str = "none",
        format: str | None = None,
        quality: int | None = None,
        face_style: str | None = None,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> str:
        """A job's id, for `job`; a picture, an animated picture or a video (the same id
        again for an `idempotency_key` used before;
        `callback_url` is POSTed the job's JSON when it ends); raises the core's typed
        errors."""
        with counted(self.service.observe, "handle_jobs") as answer:
            kind, options = handle_options(
                self.service.settings,
                image,
                style,
                size,
                crop,
                format,
                quality,
                face_style,
                jobs=True,
            )
            retry = checked_key(idempotency_key)
            admitted = await self.service.submit_job(
                image, options, HANDLE_CLIENT, retry, callback_url=callback_url, kind=kind
            )
            answer.outcome = admitted.outcome
            answer.status = 200 if admitted.replayed else 202  # as POST /v1/jobs answers
        return admitted.view.id

    async def job(self, job_id: str) -> dict[str, Any]:
        """A job's state: the JSON of `GET /v1/jobs/{id}`."""
        return job_json(await self.service.job_view(job_id))


def wire(model: DeploymentHandle, settings: Settings) -> StyleService:
    """One ingress replica's service, over the model deployment and the cluster's actors."""
    metrics = IngressMetrics()
    cache = CacheClient(
        shards=settings.cache_shards,
        max_bytes=settings.cache_max_bytes,
        ttl_s=settings.cache_ttl_s,
        claim_timeout_s=settings.request_timeout_s,
        call_timeout_s=CALL_TIMEOUT_S,
        on_unavailable=lambda: metrics.unavailable("actor"),
    )
    redis = (
        RedisTier.for_settings(
            settings,
            settings.cache_redis_url.get_secret_value(),
            on_unavailable=lambda: metrics.unavailable("redis"),
        )
        if settings.cache_redis_url is not None
        else None
    )
    line = SchedulerClient(
        settings,
        worker=serve.get_replica_context().replica_id.unique_id,
        call_timeout_s=CALL_TIMEOUT_S,
    )
    examples = (
        load_examples(
            settings.examples_dir,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_pixels,
        )
        if settings.examples_dir is not None
        else []
    )
    return StyleService(
        settings,
        model=ModelClient(model),
        cache=cache,
        redis=redis,
        line=line,
        observe=metrics.observe,
        examples=examples,
        app=serve.get_replica_context().app_name,
    )


def handle_options(
    settings: Settings,
    image: bytes,
    style: str | None,
    size: int | str | None,
    crop: str,
    format: str | None,
    quality: int | None,
    face_style: str | None,
    *,
    jobs: bool = False,
) -> tuple[Kind, StylizeOptions]:
    """A handle call's upload kind and options, and its byte limit (a video's, for a job;
    HTTP uploads are capped while they stream)."""
    kind = kind_of(image)
    limit = (
        settings.max_video_upload_bytes if jobs and kind == "video" else settings.max_upload_bytes
    )
    if len(image) > limit:
        raise TooLarge(f"the upload is {len(image):,} bytes; the limit is {limit:,} bytes")
    options = StylizeOptions.build(
        settings,
        style=style,
        size=size,
        crop=crop,
        format=format,
        quality=quality,
        face_style=face_style,
        kind=kind,
    )
    return kind, options
