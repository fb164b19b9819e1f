"""The real Prometheus, with ops/'s config and rules, scraping the session cluster: counters move
by the traffic sent, /v1/stats agrees, an overload fires the shedding alert, and the dashboard
asks only for metrics that exist."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from benchmarks.common import free_port
from tests.conftest import ROOT, Service, jpeg_bytes, smooth_picture
from tests.test_serve_jobs import idle

pytestmark = pytest.mark.timeout(600)

OPS = ROOT / "ops"
PROMETHEUS = "/usr/bin/prometheus"


@pytest.fixture(scope="module")
def prometheus(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus on a free port with ops/prometheus.yml pointed at this cluster's metrics
    endpoint, every 5 s, and ops/alerts.yml with no `for:` (a test cannot wait minutes)."""
    import ray

    node = ray._private.worker._global_node
    assert node is not None
    folder = tmp_path_factory.mktemp("prometheus")
    rules = yaml.safe_load((OPS / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "0s"
    (folder / "alerts.yml").write_text(yaml.safe_dump(rules))
    config = yaml.safe_load((OPS / "prometheus.yml").read_text())
    # By the suite's end the endpoint serves ~5 MB (every app's replicas' series) in over a
    # second: a 1 s scrape would time out on it, and the target would read as down.
    config["global"] = {
        "scrape_interval": "5s",
        "scrape_timeout": "5s",
        "evaluation_interval": "1s",
    }
    config["rule_files"] = [str(folder / "alerts.yml")]
    (job,) = config["scrape_configs"]
    del job["file_sd_configs"]  # Ray's discovery file lists this node's endpoint; pinned here
    job["static_configs"] = [{"targets": [f"127.0.0.1:{node.metrics_export_port}"]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def eventually(
    check: Callable[[], Any], timeout_s: float = 60, why: Callable[[], Any] = lambda: None
) -> Any:
    """`check()`'s first true value within `timeout_s`; `why()` says what was seen when none."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, ("not within the time allowed", why())
        time.sleep(0.5)


def total(prometheus: str, query: str) -> float:
    """The query's value summed over its series (0 when it has none yet)."""
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10)
    return sum(float(r["value"][1]) for r in answer.json()["data"]["result"])


def requests(outcome: str, status: int, route: str = "stylize") -> str:
    labels = f'application="animegan",route="{route}",outcome="{outcome}",status="{status}"'
    return f"ray_animegan_requests_total{{{labels}}}"


def ray_target(prometheus: str) -> dict[str, Any]:
    """Prometheus's view of the Ray target: health, last error, how long the last scrape took."""
    answer = httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()
    targets = answer["data"]["activeTargets"]  # none until the configuration is loaded
    keys = ("health", "lastError", "lastScrapeDuration")
    return {key: target[key] for target in targets for key in keys} or {"health": "unknown"}


def test_counters_move_by_the_traffic_sent(service: Service, prometheus: str) -> None:
    from ray import serve

    eventually(lambda: ray_target(prometheus)["health"] == "up", why=lambda: ray_target(prometheus))
    watched = {
        "miss": requests("miss", 200),
        "hit": requests("hit", 200),
        "invalid_image": requests("invalid_image", 400),
        "handle": requests("miss", 200, route="handle"),
        "handle_jobs": requests("queued", 202, route="handle_jobs"),
    }
    before = {name: total(prometheus, query) for name, query in watched.items()}
    pictures = [jpeg_bytes(smooth_picture(64, 48, seed=9300 + i)) for i in range(3)]
    for image in pictures + pictures[:2]:  # 3 misses, then 2 hits
        httpx.post(f"{service.url}/v1/stylize", content=image, params={"size": 48}, timeout=60)
    httpx.post(f"{service.url}/v1/stylize", content=b"\xff\xd8\xff broken", timeout=60)
    # The Python handle's calls are counted the same way, under routes of their own.
    handle = serve.get_app_handle("animegan")
    handle.stylize.remote(jpeg_bytes(smooth_picture(64, 48, seed=9310)), size=48).result()
    handle.submit.remote(jpeg_bytes(smooth_picture(64, 48, seed=9311)), size=48).result()
    sent = {"miss": 3, "hit": 2, "invalid_image": 1, "handle": 1, "handle_jobs": 1}
    eventually(
        lambda: all(
            total(prometheus, query) - before[name] == sent[name] for name, query in watched.items()
        )
    )

    # The cluster cache's figures are the same in /v1/stats and in Prometheus.
    def agree() -> bool:
        stats = httpx.get(f"{service.url}/v1/stats", timeout=10).json()["cache"]
        answer = httpx.get(
            f"{prometheus}/api/v1/query", params={"query": "ray_animegan_cache_entries"}
        ).json()
        return any(float(r["value"][1]) == stats["entries"] for r in answer["data"]["result"])

    eventually(agree)


def test_an_overload_fires_the_shedding_alert(crowd: str, prometheus: str, tmp_path: Path) -> None:
    async def flood(first: int, count: int) -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            answers = await asyncio.gather(
                *(
                    client.post(
                        f"{crowd}/v1/stylize",
                        content=jpeg_bytes(smooth_picture(96, 64, seed=first + i)),
                        params={"size": 96},
                    )
                    for i in range(count)
                )
            )
        return [a.status_code for a in answers]

    shed = 'ray_animegan_requests_total{application="crowd",status="503"}'
    statuses = asyncio.run(flood(9400, 20))
    assert 503 in statuses and set(statuses) <= {200, 503, 504}
    # A counter's series appears with its first value, and rate() cannot see the rise to it:
    # the first overload makes the series, the second is the rise the alert sees.
    eventually(lambda: total(prometheus, shed) > 0, why=lambda: ray_target(prometheus))
    idle(crowd)
    statuses = asyncio.run(flood(9500, 120))  # ~100 refusals: over 0.2 a second in 5 min
    assert statuses.count(503) > 60 and set(statuses) <= {200, 503, 504}

    def firing() -> bool:
        alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "AnimeganShedding" and a["state"] == "firing"
            for a in alerts
        )

    eventually(firing, timeout_s=90)
    picture = alerts_page(prometheus, tmp_path / "alert-firing.png")
    assert picture.stat().st_size > 10_000


def alerts_page(prometheus: str, path: Path) -> Path:
    """Prometheus's own alerts page in headless Chromium (docs/alert-firing.png is one)."""
    from playwright.sync_api import sync_playwright

    from tests.test_page import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        # Debian's package ships Prometheus's classic pages, not the newer React ones.
        page.goto(f"{prometheus}/classic/alerts")
        page.get_by_text("AnimeganShedding").first.click()  # unfold it: its rule and instance
        page.wait_for_timeout(500)
        assert "firing" in page.content().lower()
        page.screenshot(path=str(path))
        browser.close()
    return path


def test_the_dashboard_asks_only_for_exported_metrics(prometheus: str) -> None:
    names = set(httpx.get(f"{prometheus}/api/v1/label/__name__/values", timeout=10).json()["data"])
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    asked = {name for query in queries for name in re.findall(r"\bray_[a-z0-9_]+", query)}
    assert asked and asked <= names, sorted(asked - names)
