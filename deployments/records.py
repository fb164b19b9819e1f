"""Where the line's job records outlive its actor: Redis where `cache_redis_url` is set (it
outlives the application and the cluster too), else the GCS's key-value store, where Serve's
controller and Ray's job manager keep theirs (it outlives the actor, not the cluster)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis
from ray.experimental.internal_kv import internal_kv_get_gcs_client
from redis import asyncio as aioredis

from .core.jobs import upload_name
from .core.journal import Records
from .core.settings import Settings

GCS_NAMESPACE = b"animegan"
RECORDS_VERSION = 1  # in every key: a new shape of record reads none of the old
GCS_TIMEOUT_S = 5


def job_records(settings: Settings, app: str) -> Records:
    if settings.cache_redis_url is None:
        return GcsRecords(app)
    return RedisRecords(settings, app)


class GcsRecords:
    def __init__(self, app: str) -> None:
        self.prefix = f"jobs:v{RECORDS_VERSION}:{app}:".encode()
        self.gcs = internal_kv_get_gcs_client()

    async def write(self, saved: dict[str, dict[str, Any]], forgotten: list[str]) -> None:
        puts = [
            self.gcs.async_internal_kv_put(
                self.prefix + job_id.encode(),
                json.dumps(record).encode(),
                True,
                namespace=GCS_NAMESPACE,
                timeout=GCS_TIMEOUT_S,
            )
            for job_id, record in saved.items()
        ]
        deletes = [
            self.gcs.async_internal_kv_del(
                self.prefix + job_id.encode(), False, namespace=GCS_NAMESPACE, timeout=GCS_TIMEOUT_S
            )
            for job_id in forgotten
        ]
        await asyncio.gather(*puts, *deletes)

    def load(self) -> list[dict[str, Any]]:
        keys = self.gcs.internal_kv_keys(self.prefix, namespace=GCS_NAMESPACE, timeout=30)
        if not keys:
            return []
        values = self.gcs.internal_kv_multi_get(keys, namespace=GCS_NAMESPACE, timeout=30)
        return [json.loads(value) for value in values.values() if value is not None]


class RedisRecords:
    """One key per job; a finished job's expires with its TTL, and its upload goes with it."""

    def __init__(self, settings: Settings, app: str) -> None:
        assert settings.cache_redis_url is not None
        self.url = settings.cache_redis_url.get_secret_value()
        self.prefix = settings.cache_redis_prefix
        self.app = app
        self.ttl_s = max(1, round(settings.job_ttl_s))
        self.client = aioredis.Redis.from_url(
            self.url, socket_timeout=settings.cache_redis_timeout_s * 4, retry_on_error=[]
        )

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}job:v{RECORDS_VERSION}:{self.app}:{job_id}"

    async def write(self, saved: dict[str, dict[str, Any]], forgotten: list[str]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for job_id, record in saved.items():
                finished = record["finished_at"] is not None
                pipe.set(self._key(job_id), json.dumps(record), ex=self.ttl_s if finished else None)
                if finished:
                    pipe.delete(self.prefix + upload_name(self.app, job_id))
            for job_id in forgotten:
                pipe.delete(self._key(job_id), self.prefix + upload_name(self.app, job_id))
            await pipe.execute()

    def load(self) -> list[dict[str, Any]]:
        with redis.Redis.from_url(self.url, socket_timeout=10) as client:
            keys = list(client.scan_iter(match=self._key("*"), count=1000))
            values = client.mget(keys) if keys else []
        return [json.loads(value) for value in values if value is not None]
