"""Waiting for a CustomResourceDefinition to be served, as tests and the demo need."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


def wait_established(kubectl: Path, kubeconfig: Path, crd: str, timeout: float = 60) -> None:
    """Poll until `crd` is Established. Not `kubectl wait`: it fails outright on a CRD
    created a moment ago, before the API server has written any condition."""
    deadline = time.monotonic() + timeout
    while True:
        got = subprocess.run(
            [str(kubectl), f"--kubeconfig={kubeconfig}", "get", "crd", crd, "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        if got.returncode == 0:
            conditions = json.loads(got.stdout).get("status", {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRD {crd} is not Established after {timeout:.0f}s: {got.stderr}")
        time.sleep(0.2)
