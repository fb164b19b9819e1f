"""A client of a running animegan-serve over HTTP; refusals come back as the core's typed errors."""

from __future__ import annotations

from typing import Any, get_args

import httpx
from pydantic import SecretStr

from .core.errors import AnimeGANError, Unreachable, error_from_code
from .core.options import StylizeOptions
from .core.results import CacheOutcome, Stylized

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """One server, with `Authorization: Bearer <api_key>` on every call when a key is given."""

    def __init__(
        self, url: str = DEFAULT_URL, *, api_key: SecretStr | None = None, timeout_s: float = 120
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, timeout=timeout_s, headers=headers)

    def styles(self) -> list[dict[str, Any]]:
        """`GET /v1/styles`: every style, ready or not (and why)."""
        styles: list[dict[str, Any]] = self._send("GET", "/v1/styles").json()
        return styles

    def stats(self) -> dict[str, Any]:
        """`GET /v1/stats`: the cache, ingress and model counters."""
        stats: dict[str, Any] = self._send("GET", "/v1/stats").json()
        return stats

    def stylize(self, image: bytes, options: StylizeOptions) -> Stylized:
        """`POST /v1/stylize`, every option spelled out: the server's defaults do not matter."""
        params = {k: v for k, v in vars(options).items() if v is not None}
        answer = self._send("POST", "/v1/stylize", content=image, params=params)
        cache = answer.headers.get("x-cache", "miss")
        return Stylized(
            body=answer.content,
            key=answer.headers.get("etag", "").strip('"'),
            cache=cache if cache in get_args(CacheOutcome) else "miss",
            options=options,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        try:
            answer = self.http.request(method, path, **request)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach animegan-serve at {self.url} ({exc})") from None
        if answer.status_code != 200:
            raise self._refusal(answer)
        return answer

    def _refusal(self, answer: httpx.Response) -> AnimeGANError:
        """The typed error a refusal carries (its JSON body), or Unreachable if it has none."""
        try:
            error = answer.json()["error"]
            code, message = str(error["code"]), str(error["message"])
        except (ValueError, KeyError, TypeError):
            return Unreachable(f"HTTP {answer.status_code} from {self.url}")
        hint = " (set ANIMEGAN_API_KEY)" if code == "unauthorized" else ""
        return error_from_code(code, message + hint)
