"""The Serve application `animegan`: Ingress -> StyleModel, wired once.

`serve run serve_config.yaml` calls `build_app` with the config's `args` (any field of
`Settings`). Settings are resolved here, once, environment included, and every replica gets the
same typed object: the `ANIMEGAN_*` variables of the shell that deploys apply cluster-wide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ray.serve import Application

from .core.settings import Settings
from .ingress import Ingress
from .model import StyleModel

APP_NAME = "animegan"


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The builder `serve run` calls; a bad option fails the deploy with its reason."""
    return compose(Settings(**(args or {})))


def compose(
    settings: Settings,
    *,
    deployment_options: dict[str, dict[str, Any]] | None = None,
) -> Application:
    """The application graph, with optional per-deployment options (as in serve_config.yaml)."""
    options = deployment_options or {}
    # @serve.deployment turns the classes into Deployments, which mypy cannot see.
    model = StyleModel.options(**options.get("StyleModel", {})).bind(settings)  # type: ignore[attr-defined]
    return Ingress.options(**options.get("Ingress", {})).bind(model, settings)  # type: ignore[attr-defined]


def from_config(path: str | Path, **overrides: Any) -> Application:
    """The application as `serve_config.yaml` describes it, for Python callers of `serve.run`.

    `overrides` replace entries of the config's `args`.
    """
    config = yaml.safe_load(Path(path).read_text())
    (app,) = [a for a in config["applications"] if a["name"] == APP_NAME]
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app["deployments"]}
    return compose(Settings(**{**app.get("args", {}), **overrides}), deployment_options=options)
