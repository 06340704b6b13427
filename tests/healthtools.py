"""The GitOps health helpers built by hack/build-healthtools.sh (built here when missing, a
minute cold; `make test` builds them first): what Argo CD's Lua runtime and Flux's kstatus make
of an object.

    pytest_plugins = ["healthtools"]

    def test_something(healthtools):
        healthtools.kstatus(obj)              # {"status": "InProgress", "message": ...}
        healthtools.argocd(obj)               # {"status": "Suspended", "message": ...}

PYTEST_DONT_REWRITE: test modules import it before pytest registers it as a plugin (as kube.py).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "hack" / "build-healthtools.sh"
# Argo CD's upstream layout: resource_customizations/<group>/<Kind>/health.lua.
HEALTH_DIR = (
    ROOT / "manifests" / "argocd" / "resource_customizations" / "mlops.modeldeploy.dev"
) / "ModelDeployment"


@dataclass(frozen=True)
class HealthTools:
    bin_dir: Path

    def run(self, tool: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def _json(self, tool: str, *args: str, obj: dict) -> dict:
        proc = self.run(tool, *args, stdin=json.dumps(obj))
        if proc.returncode != 0:
            raise AssertionError(f"{tool} exited {proc.returncode}: {proc.stderr}")
        return json.loads(proc.stdout)

    def kstatus(self, obj: dict) -> dict:
        """kstatus' verdict (Current, InProgress, Failed, ...) and message."""
        return self._json("kstatus", obj=obj)

    def argocd(self, obj: dict, *, open_libs: bool = False) -> dict:
        """Argo CD's health from the shipped health.lua; open_libs=False is argocd-cm's default
        (no `string`, no `math`), True is how built-in scripts run."""
        args = ["-script", str(HEALTH_DIR / "health.lua")]
        return self._json("luahealth", *(["-open-libs"] if open_libs else []), *args, obj=obj)


@pytest.fixture(scope="session")
def healthtools() -> HealthTools:
    built = subprocess.run(
        [str(BUILD)], capture_output=True, text=True, timeout=590, check=False, env=dict(os.environ)
    )
    if built.returncode != 0:
        raise AssertionError(f"{BUILD} exited {built.returncode}:\n{built.stderr}")
    tools = HealthTools(Path(built.stdout.strip().splitlines()[-1]))
    for tool in ("luahealth", "kstatus"):
        assert os.access(tools.bin_dir / tool, os.X_OK), tools.bin_dir / tool
    return tools
