"""The one settings model: every option with its default, each overridable by `ANIMEGAN_<NAME>`.

Precedence, highest first: `ANIMEGAN_*` environment variables, then the arguments the model is
built with (`serve_config.yaml`'s `args`, or keyword arguments), then the defaults. Settings are
resolved once, where the application is built, and handed to every replica as this object.
"""

from __future__ import annotations

import base64
import binascii
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Precision = Literal["auto", "fp32", "bf16"]
ImageFormat = Literal["png", "jpeg", "webp"]
# A clip's: H.264 in MP4, VP9 in WebM, or an animation (png: APNG, webp: animated WebP).
OutputFormat = Literal["png", "jpeg", "webp", "mp4", "webm", "gif"]
Crop = Literal["none", "square", "face"]
IPNetwork = IPv4Network | IPv6Network

OFFICIAL_STYLES = ("celeba_distill", "face_paint_512_v1", "face_paint_512_v2", "paprika")


class CustomStyle(BaseModel):
    """A style beyond the official four: where its weights are, and optionally their pin."""

    source: str = Field(description="Local path or http(s) URL of a state_dict file.")
    sha1: str | None = Field(default=None, description="Git blob SHA-1 pin of the file.")
    description: str = "Custom style."


class Settings(BaseSettings):
    """Every option of animegan-serve."""

    model_config = SettingsConfigDict(env_prefix="ANIMEGAN_", extra="forbid")

    # Styles and weights
    styles: list[str] = Field(default_factory=lambda: list(OFFICIAL_STYLES))
    default_style: str = "face_paint_512_v2"
    custom_styles: dict[str, CustomStyle] = Field(default_factory=dict)
    weights_dir: Path = Path("~/.cache/animegan-serve/weights")
    download_timeout_s: float = 60.0

    # Engine
    precision: Precision = "auto"
    threads: int | None = Field(
        default=None, ge=1, description="torch threads; None keeps torch's."
    )
    # A request with the model replicas to itself may use more threads: at low load the other
    # cores would idle.
    solo_threads: int | None = Field(default=None, ge=1)

    # Input limits, checked before a full decode
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    max_pixels: int = Field(default=50_000_000, ge=1)

    # Output
    default_size: int = Field(default=512, ge=1)
    min_size: int = Field(default=16, ge=1)
    max_size: int = Field(default=2048, ge=1, le=4096)
    default_format: ImageFormat = "png"
    default_quality: int = Field(default=90, ge=1, le=100)
    png_compress_level: int = Field(default=1, ge=0, le=9)
    max_faces: int = Field(default=16, ge=1)  # with a face_style: the largest this many drawn
    # What one model call may take for a picture's activations: a larger picture runs in tiles.
    inference_memory_bytes: int = Field(default=4 * 1024**3, ge=256 * 1024**2)

    # Videos and animated pictures (core/clips.py); each frame is also held to max_pixels
    max_video_upload_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    max_video_seconds: float = Field(default=600.0, gt=0)
    max_video_frames: int = Field(default=20_000, ge=1)
    # An animated picture /v1/stylize answers at once: 32 frames of 512 px take ~35 s on one
    # replica of this machine's (fp32), within request_timeout_s; longer ones go to /v1/jobs.
    max_sync_frames: int = Field(default=32, ge=1)
    # A clip's frames go to the model in turns of about this much of a replica's time (from
    # its measured speed; a frame at least): one call and one turn in the line for several
    # small frames, while another client's picture waits for a turn or two.
    clip_turn_s: float = Field(default=0.5, ge=0)
    clip_window: int = Field(default=16, ge=1)  # a clip's turns decoded and in flight at once

    # Cache (Serve application)
    cache_max_bytes: int = Field(default=512 * 1024 * 1024, ge=0)
    cache_ttl_s: float | None = Field(default=None, gt=0)
    # Cache actors the keys are spread over (consistent hashing); cache_max_bytes is their total.
    cache_shards: int = Field(default=1, ge=1, le=64)
    local_cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # A third tier that outlives the cluster: redis://[:password@]host:port/db (rediss:// for
    # TLS). A secret: it may carry the password, so pass it as ANIMEGAN_CACHE_REDIS_URL.
    cache_redis_url: SecretStr | None = None
    cache_redis_prefix: str = Field(default="animegan:v1:", min_length=1)
    cache_redis_timeout_s: float = Field(default=0.5, gt=0)
    cache_redis_max_value_bytes: int = Field(default=8 * 1024 * 1024, ge=1)

    # Pictures warmed into the cache at start-up, for every ready style, and shown on the page
    # as examples (a folder on every node that runs an ingress replica).
    examples_dir: Path | None = None

    # Batching and deadlines (Serve application)
    adaptive_batching: bool = True  # False: always wait for max_batch_size (the seed's way)
    max_batch_size: int = Field(default=8, ge=1)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0)
    request_timeout_s: float = Field(default=60.0, gt=0)

    # The line for the model (see core/scheduler.py)
    max_queued_jobs: int = Field(default=1000, ge=1)  # jobs and waiting requests together
    max_jobs_per_client: int = Field(default=100, ge=1)
    job_ttl_s: float = Field(default=600.0, gt=0)  # how long a finished job can be looked up
    # Queued uploads wait with the ingress replica that accepted them (and in Redis, where set):
    # bounded by their bytes all together and per client. 4 GiB fits a 24 GiB machine beside
    # two model replicas (~1-3 GB each) and Ray's own processes (~1.3 GB).
    max_queued_bytes: int = Field(default=4 * 1024**3, ge=1)
    max_client_queued_bytes: int = Field(default=1024**3, ge=1)
    # Uploads one ingress replica reads and works on at once (beyond: 503, unread).
    max_reading_bytes: int = Field(default=512 * 1024**2, ge=1)
    # A synchronous request that the line's pace says would wait longer is refused at once
    # (503 + Retry-After): waiting longer only to time out would waste its slot. Unset: 10 s,
    # or half of request_timeout_s if that is shorter.
    max_wait_s: float | None = Field(default=None, ge=0)
    # Peers whose X-Forwarded-For names the client (fairness is per client address).
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    # An IPv6 client is its network of this many bits, for fairness and every per-client limit:
    # a host is usually handed a whole /64, so its own addresses would otherwise be many clients.
    client_ipv6_prefix: int = Field(default=64, ge=1, le=128)

    # Webhooks: a job's `callback_url` is called when it ends, signed as Standard Webhooks
    # says with this `whsec_`-prefixed base64 secret; only hosts listed here are called
    # (`*.example.com` allows its subdomains); none listed: `callback_url` is refused.
    webhook_secret: SecretStr | None = None
    webhook_allowed_hosts: list[str] = Field(default_factory=list)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_retry_for_s: float = Field(default=3600.0, ge=0)  # then given up on

    # Access (HTTP only: Python handles are callers inside the cluster)
    api_key: SecretStr | None = Field(default=None, min_length=16)

    @field_validator("weights_dir", "examples_dir")
    @classmethod
    def _expand_home(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @field_validator("cache_redis_url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        schemes = ("redis://", "rediss://", "unix://")
        if value is not None and not value.get_secret_value().startswith(schemes):
            raise ValueError(f"cache_redis_url must start with {', '.join(schemes)}")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            secret = value.get_secret_value()
            try:
                key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
            except binascii.Error:
                key = b""
            if not secret.startswith("whsec_") or len(key) < 16:
                raise ValueError("webhook_secret must be whsec_ and at least 16 base64 bytes")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        known = set(OFFICIAL_STYLES) | set(self.custom_styles)
        unknown = [name for name in self.styles if name not in known]
        if unknown:
            raise ValueError(
                f"styles {unknown} are neither official ({', '.join(OFFICIAL_STYLES)}) "
                "nor listed in custom_styles"
            )
        if not self.styles:
            raise ValueError("styles must name at least one style")
        if self.default_style not in self.styles:
            if "default_style" in self.model_fields_set:
                raise ValueError(
                    f"default_style {self.default_style!r} is not in styles {self.styles}"
                )
            self.default_style = self.styles[0]
        if self.max_wait_s is None:
            self.max_wait_s = min(10.0, self.request_timeout_s / 2)
        elif self.max_wait_s >= self.request_timeout_s:
            raise ValueError("max_wait_s must be shorter than request_timeout_s")
        if not self.min_size <= self.default_size <= self.max_size:
            raise ValueError("default_size must lie between min_size and max_size")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment over the arguments (as documented above); no dotenv or secret files."""
        return env_settings, init_settings
