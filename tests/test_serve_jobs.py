"""Jobs on the live application: the line's contract over HTTP and the handle, fairness between
clients, two ingress replicas, and an ingress replica that dies with jobs in hand.

The `crowd` app (conftest.py) has one model replica taking one request at a time (one slot), so
jobs queue, and two ingress replicas.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
import ray

from tests.conftest import Service, jpeg_bytes, smooth_picture
from tests.test_cli import cli

pytestmark = pytest.mark.timeout(600)


def picture(seed: int, side: int = 64) -> bytes:
    return jpeg_bytes(smooth_picture(side, side, seed=seed))


def submit(url: str, image: bytes, client: str = "10.9.0.1", **params: str | int) -> httpx.Response:
    """A job from `client` (the Serve proxy trusts our 127.0.0.1 to name it)."""
    return httpx.post(
        f"{url}/v1/jobs",
        content=image,
        params={"style": "paprika", "size": 64, **params},
        headers={"X-Forwarded-For": client},
        timeout=60,
    )


def events(url: str, job: str) -> list[tuple[str, dict]]:
    """The job's server-sent events, to the end of the stream."""
    seen = []
    with httpx.stream("GET", f"{url}/v1/jobs/{job}/events", timeout=120) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name is not None:
                seen.append((name, json.loads(line.removeprefix("data: "))))
    return seen


def idle(url: str, timeout_s: float = 120) -> None:
    """Wait until the app's line is empty (earlier tests on the shared app leave jobs in it)."""
    deadline = time.monotonic() + timeout_s
    while True:
        line = httpx.get(f"{url}/v1/stats", timeout=10).json()["line"]
        if line["running"] == 0 and line["queued"] == 0:
            return
        assert time.monotonic() < deadline, line
        time.sleep(0.2)


def finished(url: str, job: str, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        view = httpx.get(f"{url}/v1/jobs/{job}", timeout=10).json()
        if view["status"] in ("done", "failed"):
            return view
        assert time.monotonic() < deadline, view
        time.sleep(0.2)


# -- the contract, on the main app --------------------------------------------------------------


def test_a_job_runs_and_its_result_is_the_stylized_picture(service: Service) -> None:
    image = picture(7001)
    answer = submit(service.url, image)
    assert answer.status_code == 202
    job = answer.json()
    assert answer.headers["location"] == f"/v1/jobs/{job['id']}"
    fields = {"id", "kind", "status", "position", "eta_s", "progress", "crop", "faces"}
    assert set(job) == fields | {"result", "error"}
    assert (job["kind"], job["progress"], job["crop"], job["faces"]) == ("image", None, None, None)
    assert len(job["id"]) >= 22  # 128 random bits, URL-safe
    stream = events(service.url, job["id"])
    assert stream[-1][0] == "done"
    assert [name for name, _ in stream].count("done") == 1
    result = httpx.get(service.url + stream[-1][1]["result"], timeout=10)
    assert result.status_code == 200
    assert result.headers["content-type"] == "image/png"
    assert result.headers["cache-control"] == "public, max-age=31536000, immutable"
    direct = httpx.post(
        f"{service.url}/v1/stylize",
        content=image,
        params={"style": "paprika", "size": 64},
        timeout=60,
    )
    assert direct.headers["x-cache"] == "hit"  # the job's result, from the cache
    assert direct.content == result.content
    assert result.headers["etag"] == direct.headers["etag"]


def test_a_cached_picture_is_done_in_the_202_and_late_streams_get_the_end(
    service: Service,
) -> None:
    image = picture(7002)
    finished(service.url, submit(service.url, image).json()["id"])
    again = submit(service.url, image, client="10.9.0.2")
    assert again.status_code == 202
    assert again.json()["status"] == "done"
    assert events(service.url, again.json()["id"]) == [("done", {"result": again.json()["result"]})]


def test_bad_input_is_refused_at_submission(service: Service) -> None:
    for body, params, code in [
        (b"not an image", {}, "unsupported_format"),
        (picture(7003), {"size": "abc"}, "bad_parameter"),
        (picture(7003), {"style": "nope"}, "unknown_style"),
    ]:
        answer = submit(service.url, body, **params)
        assert (answer.status_code // 100, answer.json()["error"]["code"]) == (4, code)
    for path in ("/v1/jobs/nope", "/v1/jobs/nope/events"):
        assert httpx.get(service.url + path, timeout=10).json()["error"]["code"] == "unknown_job"
    gone = httpx.get(f"{service.url}/v1/results/{'0' * 64}", timeout=10)
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "unknown_result")


def test_a_python_handle_submits_and_follows_jobs(service: Service) -> None:
    from ray import serve

    handle = serve.get_app_handle("animegan")
    job = handle.submit.remote(picture(7004), style="paprika", size=64).result(timeout_s=60)
    deadline = time.monotonic() + 60
    while (view := handle.job.remote(job).result(timeout_s=10))["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert view["status"] == "done" and view["result"].startswith("/v1/results/")
    assert httpx.get(service.url + view["result"], timeout=10).status_code == 200


# -- the line, on the crowd app -----------------------------------------------------------------


def test_jobs_are_served_round_robin_between_clients_across_two_replicas(crowd: str) -> None:
    idle(crowd)
    bulk = [
        submit(crowd, picture(7100 + i, side=256), client="10.9.1.1", size=256).json()
        for i in range(6)
    ]
    lone = submit(crowd, picture(7200, side=256), client="10.9.1.2", size=256).json()
    assert lone["status"] == "queued" and lone["position"] <= 1
    assert lone["eta_s"] is None or lone["eta_s"] > 0
    # Polled through either ingress replica (the proxy picks one per request).
    assert finished(crowd, lone["id"])["status"] == "done"
    states = [httpx.get(f"{crowd}/v1/jobs/{j['id']}", timeout=10).json()["status"] for j in bulk]
    # Lone waited for the one bulk job ahead of it in the rotation (plus those already started),
    # not for all six: first come, first served would have run every bulk job first.
    assert states.count("done") <= 4
    for job in bulk:
        assert finished(crowd, job["id"])["status"] == "done"
    stats = httpx.get(f"{crowd}/v1/stats", timeout=10).json()
    assert stats["line"]["ingress_replicas"] == 2
    assert stats["line"]["slots"] == 1


def test_positions_count_down_and_a_queued_job_can_be_cancelled(crowd: str) -> None:
    idle(crowd)
    jobs = [
        submit(crowd, picture(7300 + i, side=256), client="10.9.2.1", size=256).json()
        for i in range(5)
    ]
    last = jobs[-1]
    assert last["position"] is not None and last["position"] >= 2
    seen = events(crowd, jobs[-2]["id"])
    places = [data["position"] for name, data in seen if name == "queued"]
    assert places == sorted(places, reverse=True) and len(places) >= 1
    assert [name for name, _ in seen][-2:] == ["running", "done"]
    cancelled = httpx.delete(f"{crowd}/v1/jobs/{last['id']}", timeout=10)
    if cancelled.status_code == 204:  # still queued when asked
        view = finished(crowd, last["id"])
        assert (view["status"], view["error"]["code"]) == ("failed", "cancelled")
    else:
        assert cancelled.json()["error"]["code"] == "job_not_queued"
    again = httpx.delete(f"{crowd}/v1/jobs/{jobs[0]['id']}", timeout=10)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "job_not_queued")


def test_a_full_line_and_a_greedy_client_are_refused_with_retry_after(crowd: str) -> None:
    idle(crowd)
    blocker = submit(crowd, picture(7399, side=640), client="10.9.3.9", size=640).json()
    assert blocker["status"] == "running"  # the one slot, for seconds: the rest queue
    accepted: list[httpx.Response] = []
    refused: list[httpx.Response] = []
    for i in range(9):
        answer = submit(crowd, picture(7400 + i, side=256), client="10.9.3.1", size=256)
        (accepted if answer.status_code == 202 else refused).append(answer)
    assert refused and all(a.status_code == 429 for a in refused)
    assert refused[0].json()["error"]["code"] == "too_many_jobs"
    assert int(refused[0].headers["retry-after"]) >= 1
    others = [
        submit(crowd, picture(7500 + i, side=256), client=f"10.9.4.{i}", size=256) for i in range(6)
    ]
    full = [a for a in others if a.status_code == 503]
    assert full and full[0].json()["error"]["code"] == "overloaded"
    assert int(full[0].headers["retry-after"]) >= 1
    assert finished(crowd, blocker["id"], timeout_s=300)["status"] == "done"
    for answer in [*accepted, *others]:
        if answer.status_code == 202:
            assert finished(crowd, answer.json()["id"], timeout_s=300)["status"] == "done"


def test_a_full_line_sheds_misses_at_once_and_still_serves_hits(crowd: str) -> None:
    idle(crowd)
    cached = picture(7800, side=256)
    params: dict[str, str | int] = {"style": "paprika", "size": 256}
    for _ in range(20):  # into both ingress replicas' hot caches (the proxy picks at random)
        assert httpx.post(f"{crowd}/v1/stylize", content=cached, params=params).status_code == 200
    blocker = submit(crowd, picture(7801, side=640), client="10.9.6.99", size=640).json()
    waiting = [
        submit(crowd, picture(7810 + i, side=256), client=f"10.9.6.{i}", size=256)
        for i in range(12)
    ]
    assert sum(a.status_code == 202 for a in waiting) >= 11  # the line is full (12)
    started = time.monotonic()
    shed = httpx.post(f"{crowd}/v1/stylize", content=picture(7830), params=params, timeout=60)
    assert (shed.status_code, shed.json()["error"]["code"]) == (503, "overloaded")
    assert time.monotonic() - started < 1.0  # refused at once, not after a wait
    assert int(shed.headers["retry-after"]) >= 1
    hit = httpx.post(f"{crowd}/v1/stylize", content=cached, params=params, timeout=60)
    assert (hit.status_code, hit.headers["x-cache"]) == (200, "hit")
    for job in [blocker, *(a.json() for a in waiting if a.status_code == 202)]:
        assert finished(crowd, job["id"], timeout_s=300)["status"] == "done"


def test_jobs_held_by_a_dead_ingress_replica_end_job_lost_and_new_ones_are_done(
    crowd: str,
) -> None:
    """Without Redis a queued job's upload lives with the ingress replica that accepted it:
    that replica's death ends its jobs with a clear `job_lost`, never a hang."""
    idle(crowd)
    jobs = [
        submit(crowd, picture(7600 + i, side=256), client=f"10.9.5.{i}", size=256).json()
        for i in range(6)
    ]
    deadline = time.monotonic() + 60
    while httpx.get(f"{crowd}/v1/stats", timeout=10).json()["line"]["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["name"].startswith("SERVE_REPLICA::crowd#Ingress#"):
            ray.kill(ray.get_actor(entry["name"], namespace=entry["namespace"]), no_restart=True)
    ends = []
    for job in jobs:
        deadline = time.monotonic() + 180
        while True:
            try:
                view = httpx.get(f"{crowd}/v1/jobs/{job['id']}", timeout=10).json()
            except httpx.HTTPError:
                view = {"status": "unanswered"}
            if view["status"] in ("done", "failed"):
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.5)
        ends.append(view["status"] if view["status"] == "done" else view["error"]["code"])
    assert ends == ["job_lost"] * 6  # running and queued alike
    again = submit(crowd, picture(7650, side=64), client="10.9.5.9", size=64).json()
    assert finished(crowd, again["id"], timeout_s=180)["status"] == "done"  # the new replica


def test_the_command_line_sends_files_as_jobs_and_shows_them_waiting(
    crowd: str, tmp_path: Path
) -> None:
    idle(crowd)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        (folder / f"p{i}.jpg").write_bytes(picture(7700 + i, side=256))
    args = ("stylize", str(folder), "-o", str(tmp_path / "out"), "--url", crowd)
    run = cli(*args, "--style", "paprika", "--size", "256", "-j", "4", env={"TTY_COMPATIBLE": "1"})
    assert run.returncode == 0, run.stderr
    assert re.search(r"[1-3] queued, 1 running", run.stderr)  # one slot: the rest wait
    assert "6 done, 0 skipped, 0 failed, 0 cached" in run.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 6


def test_many_addresses_of_one_ipv6_64_are_held_to_one_clients_limit(crowd: str) -> None:
    idle(crowd)
    blocker = submit(crowd, picture(7950, side=768), client="10.9.7.9", size=768).json()
    assert blocker["status"] == "running"  # the one slot, for seconds: the rest queue
    answers = [
        submit(crowd, picture(7960 + i), client=f"2001:db8:77:1::{i + 1:x}") for i in range(10)
    ]
    codes = [a.status_code for a in answers]
    assert codes == [202] * 8 + [429] * 2  # max_jobs_per_client is 8, for the whole /64
    assert answers[-1].json()["error"]["code"] == "too_many_jobs"
    neighbour = submit(crowd, picture(7975), client="2001:db8:77:2::1")
    assert neighbour.status_code == 202  # the next /64 is another client
    for answer in [*answers[:8], neighbour]:
        assert finished(crowd, answer.json()["id"], timeout_s=300)["status"] == "done"


def test_a_retried_submission_with_its_idempotency_key_queues_nothing(service: Service) -> None:
    from ray import serve

    from deployments.core.errors import IdempotencyConflict

    url, image = service.url, picture(7980)
    key = {"Idempotency-Key": "retry-7980"}
    first = httpx.post(f"{url}/v1/jobs", content=image, params={"size": 64}, headers=key)
    again = httpx.post(f"{url}/v1/jobs", content=image, params={"size": 64}, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    other = httpx.post(f"{url}/v1/jobs", content=picture(7981), params={"size": 64}, headers=key)
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_conflict")
    assert finished(url, first.json()["id"])["status"] == "done"
    handle = serve.get_app_handle("animegan")
    ids = {
        handle.submit.remote(picture(7982), size=64, idempotency_key="handle-7982").result()
        for _ in range(3)
    }
    assert len(ids) == 1
    with pytest.raises(IdempotencyConflict):
        handle.submit.remote(picture(7983), size=64, idempotency_key="handle-7982").result()
