"""A client of a running animegan-serve over HTTP; refusals come back as the core's typed errors."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import SecretStr

from .core.errors import AnimeGANError, Unreachable, error_from_code
from .core.imaging import Cut
from .core.options import StylizeOptions
from .core.results import Picture, Stylized, parse_faces

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

    def stylize_job(
        self,
        image: bytes,
        options: StylizeOptions,
        on_status: Callable[[str], None] = lambda status: None,
        on_frames: Callable[[int, int], None] = lambda done, total: None,
    ) -> Stylized:
        """Through `/v1/jobs`: submit, follow the job's events to its end, fetch the picture
        (or clip).

        `on_status` hears each status the job reaches (queued, running, done, failed), and
        `on_frames` a video's frames done and in all. A job done at submission was cached
        (`hit`).
        """
        job, cached = self.run_job(image, options, on_status, on_frames)
        answer = self._send("GET", str(self.http.base_url.join(job["result"])))
        return Stylized(
            picture_of(answer),
            answer.headers.get("etag", "").strip('"'),
            "hit" if cached else "miss",
            options,
        )

    def run_job(
        self,
        image: bytes,
        options: StylizeOptions,
        on_status: Callable[[str], None] = lambda status: None,
        on_frames: Callable[[int, int], None] = lambda done, total: None,
    ) -> tuple[dict[str, Any], bool]:
        """Submit a job and follow it to `done`: its JSON, and whether it was done at
        submission (cached); raises the typed error of a job that failed."""
        job = self._send("POST", "/v1/jobs", content=image, params=_params(options)).json()
        on_status(job["status"])
        cached = job["status"] == "done"
        while job["status"] not in ("done", "failed"):
            job = self._follow(job, on_status, on_frames)
        if job["status"] == "failed":
            raise error_from_code(job["error"]["code"], job["error"]["message"])
        return job, cached

    def line_queued(self) -> int:
        """Requests and jobs waiting for the model now (0 when the line is unknown)."""
        line = self.stats().get("line") or {}
        return int(line.get("queued", 0))

    def _follow(
        self,
        job: dict[str, Any],
        on_status: Callable[[str], None],
        on_frames: Callable[[int, int], None],
    ) -> dict[str, Any]:
        """The job's events until its end (or until the stream breaks: then its state now)."""
        path = f"/v1/jobs/{job['id']}"
        try:
            with self.http.stream("GET", f"{path}/events") as events:
                if events.status_code != 200:
                    events.read()
                    raise self._refusal(events)
                status = job["status"]
                for line in events.iter_lines():
                    if line.startswith("event: "):
                        # a video's `progress` is news of a running job
                        status = line.removeprefix("event: ").replace("progress", "running")
                        if status != job["status"]:
                            on_status(status)
                        job = {**job, "status": status}
                    elif line.startswith("data: "):
                        data = json.loads(line.removeprefix("data: "))
                        if status in ("done", "failed"):
                            return {**job, **data}
                        if "frames_done" in data:
                            on_frames(data["frames_done"], data["frames_total"])
        except httpx.HTTPError:
            pass  # the stream broke: ask for the state, and follow again if need be
        state: dict[str, Any] = self._send("GET", path).json()
        return state

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        try:
            answer = self.http.request(method, path, **request)
        except httpx.HTTPError as exc:
            raise Unreachable(f"cannot reach animegan-serve at {self.url} ({exc})") from None
        if answer.status_code not in (200, 202):
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


def picture_of(answer: httpx.Response) -> Picture:
    """A result as its headers describe it."""
    faces = answer.headers.get("x-faces")
    found = None if faces is None else parse_faces(faces)
    return Picture(answer.content, Cut.parse(answer.headers["x-crop"]), found)


def _params(options: StylizeOptions) -> dict[str, Any]:
    return {k: v for k, v in vars(options).items() if v is not None}


class JobCounts:
    """How many of a run's jobs are queued and running now, across its threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now: Counter[str] = Counter()
        self.frames: dict[int, tuple[int, int]] = {}  # running videos: (done, in all)
        self.on_change: Callable[[str], None] = lambda line: None  # hears `line()` anew

    def through(self, client: Client) -> Callable[[bytes, StylizeOptions], Stylized]:
        """A converter sending each file through `client`'s jobs, counted here."""

        def convert(image: bytes, options: StylizeOptions) -> Stylized:
            video = threading.get_ident()

            def frames(done: int, total: int) -> None:
                with self._lock:
                    self.frames[video] = (done, total)
                self.on_change(self.line())

            try:
                return client.stylize_job(
                    image, options, on_status=self._tracker(), on_frames=frames
                )
            finally:
                with self._lock:
                    self.frames.pop(video, None)

        return convert

    def line(self) -> str:
        """`2 queued, 1 running`, and the running videos' frames: `; frame 120 of 600`."""
        with self._lock:
            line = f"{self.now['queued']} queued, {self.now['running']} running"
            if self.frames:
                done = sum(d for d, _ in self.frames.values())
                total = sum(t for _, t in self.frames.values())
                line += f"; frame {done} of {total}"
            return line

    def _tracker(self) -> Callable[[str], None]:
        """An `on_status` for one job: moves it from its last status to the new one."""
        last: list[str] = []

        def move(status: str) -> None:
            with self._lock:
                if last:
                    self.now[last.pop()] -= 1
                if status in ("queued", "running"):
                    self.now[status] += 1
                    last.append(status)
            self.on_change(self.line())

        return move
