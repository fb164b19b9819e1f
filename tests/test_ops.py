"""ops/: the alert rules under promtool with series that fire and series that must not, the
Prometheus config, and the Kubernetes manifest kept equal to serve_config.yaml."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

OPS = ROOT / "ops"
PROMTOOL = "/usr/bin/promtool"

# name -> (series that must fire it, its labels beyond severity, when), (series that must not)
Series = list[tuple[str, str]]
CASES: dict[str, tuple[Series, dict[str, str], str, Series]] = {
    "AnimeganErrors": (
        [
            ('ray_animegan_requests_total{route="stylize",outcome="miss",status="200"}', "0+90x20"),
            (
                'ray_animegan_requests_total{route="stylize",outcome="internal",status="500"}',
                "0+10x20",
            ),
        ],
        {},
        "15m",
        [  # 1% of 5xx, and shedding (503) is not an error
            ('ray_animegan_requests_total{route="stylize",outcome="miss",status="200"}', "0+99x20"),
            (
                'ray_animegan_requests_total{route="stylize",outcome="internal",status="500"}',
                "0+1x20",
            ),
            (
                'ray_animegan_requests_total{route="stylize",outcome="overloaded",status="503"}',
                "0+50x20",
            ),
        ],
    ),
    "AnimeganShedding": (
        [
            (
                'ray_animegan_requests_total{route="stylize",outcome="overloaded",status="503"}',
                "0+30x30",
            )
        ],
        {},
        "25m",
        [
            (
                'ray_animegan_requests_total{route="stylize",outcome="overloaded",status="503"}',
                "0+6x30",
            )
        ],
    ),
    "AnimeganSlow": (
        [
            (
                'ray_animegan_request_seconds_bucket{route="stylize",outcome="miss",le="10"}',
                "0+1x30",
            ),
            (
                'ray_animegan_request_seconds_bucket{route="stylize",outcome="miss",le="60"}',
                "0+20x30",
            ),
            (
                'ray_animegan_request_seconds_bucket{route="stylize",outcome="miss",le="+Inf"}',
                "0+20x30",
            ),
        ],
        {},
        "25m",
        [
            (
                'ray_animegan_request_seconds_bucket{route="stylize",outcome="miss",le="10"}',
                "0+20x30",
            ),
            (
                'ray_animegan_request_seconds_bucket{route="stylize",outcome="miss",le="60"}',
                "0+20x30",
            ),
            (
                'ray_animegan_request_seconds_bucket{route="stylize",outcome="miss",le="+Inf"}',
                "0+20x30",
            ),
        ],
    ),
    "AnimeganCacheHitRatioFalling": (
        [  # 90% hits for 6 hours, then 10%
            ('ray_animegan_cache_lookups_total{result="hit"}', "0+90x360 32400+10x60"),
            ('ray_animegan_cache_lookups_total{result="miss"}', "0+10x360 3600+90x60"),
        ],
        {},
        "7h",
        [
            ('ray_animegan_cache_lookups_total{result="hit"}', "0+90x420"),
            ('ray_animegan_cache_lookups_total{result="miss"}', "0+10x420"),
        ],
    ),
    "AnimeganCacheUnavailable": (
        [('ray_animegan_cache_unavailable_total{tier="redis"}', "0+3x20")],
        {"tier": "redis"},
        "15m",
        [('ray_animegan_cache_unavailable_total{tier="redis"}', "5x20")],  # old failures only
    ),
    "AnimeganModelQueueSaturated": (
        [("ray_animegan_queue_depth", "4x15"), ("ray_animegan_slots", "4x15")],
        {},
        "10m",
        [("ray_animegan_queue_depth", "1x15"), ("ray_animegan_slots", "4x15")],
    ),
    "AnimeganReplicasAtMax": (
        [('ray_serve_autoscaling_desired_replicas{deployment="StyleModel"}', "2x40")],
        {"deployment": "StyleModel"},
        "35m",
        [('ray_serve_autoscaling_desired_replicas{deployment="StyleModel"}', "1x30 2x10")],
    ),
    "AnimeganStyleNotReady": (
        [
            ('ray_animegan_style_ready{style="paprika",replica="a"}', "0x15"),
            ('ray_animegan_style_ready{style="paprika",replica="b"}', "0x15"),
        ],
        {"style": "paprika"},
        "10m",
        [
            ('ray_animegan_style_ready{style="paprika",replica="a"}', "1x15"),
            ('ray_animegan_style_ready{style="paprika",replica="b"}', "0x15"),
        ],
    ),
    "AnimeganNoTraffic": (
        [
            ('ray_animegan_requests_total{route="stylize",outcome="hit",status="200"}', "7x90"),
            ('up{job="ray"}', "1x90"),
        ],
        {},
        "75m",
        [
            ('ray_animegan_requests_total{route="stylize",outcome="hit",status="200"}', "0+1x90"),
            ('up{job="ray"}', "1x90"),
        ],
    ),
}


def rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load((OPS / "alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def rendered(text: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it: `{{ $labels.x }}` replaced."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(PROMTOOL) is None:
        pytest.fail(f"{PROMTOOL} is missing: `make test` installs Debian's prometheus package")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def test_every_alert_has_a_firing_and_a_quiet_case_and_a_runbook() -> None:
    assert set(rules()) == set(CASES)
    for name, rule in rules().items():
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], name
        assert rule["labels"]["severity"] in ("page", "ticket"), name


def test_the_rules_fire_on_their_series_and_stay_quiet_on_the_others(tmp_path: Path) -> None:
    tests = []
    for name, (firing, labels, at, quiet) in CASES.items():
        annotations = {
            key: rendered(text, labels) for key, text in rules()[name]["annotations"].items()
        }
        expected = {"severity": rules()[name]["labels"]["severity"], **labels}
        for series, alerts in (
            (firing, [{"exp_labels": expected, "exp_annotations": annotations}]),
            (quiet, []),
        ):
            tests.append(
                {
                    "interval": "1m",
                    "input_series": [{"series": s, "values": v} for s, v in series],
                    "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": alerts}],
                }
            )
    unit = tmp_path / "alerts_test.yml"
    unit.write_text(
        yaml.safe_dump(
            {"rule_files": [str(OPS / "alerts.yml")], "evaluation_interval": "1m", "tests": tests}
        )
    )
    done = promtool("test", "rules", str(unit))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_prometheus_config_and_rules_are_valid() -> None:
    done = promtool("check", "config", "--syntax-only", str(OPS / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    done = promtool("check", "rules", str(OPS / "alerts.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_replicas_at_max_rule_matches_serve_config() -> None:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (model,) = [d for d in config["applications"][0]["deployments"] if d["name"] == "StyleModel"]
    threshold = int(rules()["AnimeganReplicasAtMax"]["expr"].split(">=")[1])
    assert threshold == model["autoscaling_config"]["max_replicas"]


SIZES = {"num_replicas", "autoscaling_config", "ray_actor_options"}  # what a cluster may change


def without_sizes(application: dict[str, Any]) -> dict[str, Any]:
    deployments = [
        {k: v for k, v in d.items() if k not in SIZES} for d in application["deployments"]
    ]
    return {**application, "deployments": deployments}


def rayservice() -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load((OPS / "rayservice.yaml").read_text())
    return manifest


def test_the_rayservice_serves_serve_config_s_application_differing_only_in_sizes() -> None:
    manifest = rayservice()
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    theirs = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    ours = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    assert [without_sizes(a) for a in theirs] == [without_sizes(a) for a in ours]
    (model,) = [d for d in theirs[0]["deployments"] if d["name"] == "StyleModel"]
    assert model["ray_actor_options"]["num_cpus"] == 1  # one model replica per core


def test_the_head_runs_no_replicas_and_the_workers_autoscale_with_matching_cpus() -> None:
    cluster = rayservice()["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray_version() and cluster["enableInTreeAutoscaling"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["minReplicas"] < workers["maxReplicas"]
    (container,) = workers["template"]["spec"]["containers"]
    cpus = workers["rayStartParams"]["num-cpus"]
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    assert container["resources"]["requests"]["cpu"] == cpus
    for group in (cluster["headGroupSpec"], workers):
        (container,) = group["template"]["spec"]["containers"]
        weights = {e["name"]: e["value"] for e in container["env"]}["ANIMEGAN_WEIGHTS_DIR"]
        assert weights in [m["mountPath"] for m in container["volumeMounts"]]
        assert group["rayStartParams"]["metrics-export-port"] == "8080"  # ops/prometheus.yml


def ray_version() -> str:
    """The Ray release pyproject.toml pins (ray[serve]>=2.60,<2.61 -> 2.60.0)."""
    pins = (ROOT / "pyproject.toml").read_text()
    found = re.search(r'"ray\[[a-z,]+\]>=(\d+\.\d+),', pins)
    assert found is not None
    return f"{found.group(1)}.0"


def test_the_image_is_the_same_ray_and_python_with_the_cpu_torch() -> None:
    dockerfile = (OPS / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray_version()}-py311-cpu" in dockerfile
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in dockerfile


def test_the_readme_lists_every_metric() -> None:
    from deployments.telemetry import table

    assert table() in (ROOT / "README.md").read_text()
