"""The layers stay apart: the core is plain Python (no Ray, nothing from the deployments above
it), and the HTTP layer knows the service only by its protocol."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import deployments.core

CORE = Path(deployments.core.__file__).parent


def core_modules() -> list[str]:
    return sorted(f"deployments.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__")


def imported_after(modules: list[str]) -> str:
    """For each module in turn, imported in a fresh interpreter: what had been loaded that the
    layer must not load, as 'module: offender' lines."""
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "    above = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')\n"
        "             or (m.startswith('deployments.') and not m.startswith('deployments.core'))]\n"
        "    if above:\n"
        "        print(name + ': ' + ', '.join(sorted(above)[:3]))\n"
        "        break\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_every_core_module_imports_without_ray_or_the_deployments() -> None:
    modules = core_modules()
    assert len(modules) >= 25 and "deployments.core.tiers" in modules
    assert imported_after(modules) == ""


def test_the_http_layer_does_not_import_the_ingress_or_ray() -> None:
    code = (
        "import sys, deployments.http; "
        "assert 'deployments.ingress' not in sys.modules and 'ray' not in sys.modules"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
