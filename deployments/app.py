"""The Serve application `animegan`: Ingress -> StyleModel, wired once.

`serve run serve_config.yaml` calls `build_app` with the config's `args` (any field of
`Settings`). Settings are resolved here, environment included, and handed to every replica,
so `ANIMEGAN_*` variables of the shell that deploys apply cluster-wide.
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
    return compose(Settings.from_args(args))


def compose(
    settings: Settings,
    *,
    deployment_options: dict[str, dict[str, Any]] | None = None,
) -> Application:
    """The application graph, with optional per-deployment options (as in serve_config.yaml)."""
    options = deployment_options or {}
    resolved = settings.model_dump(mode="json")
    if settings.api_key is not None:  # JSON masks secrets; the replicas need the key itself
        resolved["api_key"] = settings.api_key.get_secret_value()
    model = StyleModel.options(**options.get("StyleModel", {})).bind(resolved)
    return Ingress.options(**options.get("Ingress", {})).bind(model, resolved)


def from_config(path: str | Path, **overrides: Any) -> Application:
    """The application as `serve_config.yaml` describes it, for Python callers of `serve.run`.

    `overrides` replace entries of the config's `args`.
    """
    config = yaml.safe_load(Path(path).read_text())
    (app,) = [a for a in config["applications"] if a["name"] == APP_NAME]
    options = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app["deployments"]}
    settings = Settings.from_args({**app.get("args", {}), **overrides})
    return compose(settings, deployment_options=options)
