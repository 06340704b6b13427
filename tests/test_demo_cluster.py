"""`make demo-cluster` end to end (hack/demo_cluster.py with its own state directory): the seed
model through staging and production with the operator and both endpoints as Ready pods on a
real node, predictions from both, and `down` leaving no process and the host as it was.

Runs as root with containerd (`make test`); skips with the reason elsewhere.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from node import host_differences, host_snapshot, skip_unless_node_possible
from test_demo import processes_under

pytestmark = pytest.mark.node
ROOT = Path(__file__).resolve().parents[1]


def demo_cluster(action: str, state: Path) -> subprocess.CompletedProcess[str]:
    script = ROOT / "hack" / "demo_cluster.py"
    argv = [sys.executable, str(script), action, "--state-dir", str(state)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=ROOT)


def test_demo_cluster_reaches_production_with_everything_in_pods(tmp_path: Path) -> None:
    skip_unless_node_possible()
    state = tmp_path / "demo-cluster"
    before = host_snapshot()
    try:
        up = demo_cluster("up", state)
        output = up.stdout + up.stderr
        assert up.returncode == 0, output
        seconds = float(re.search(r"Production reached in ([0-9.]+)s", output).group(1))
        print(f"make demo-cluster: production reached in {seconds:.1f}s")
        auc = float(re.search(r"AUC on 143 held-out rows: ([0-9.]+)", output).group(1))
        assert auc >= 0.95, output
        # `kubectl get pods -A`: the operator and both endpoints, Ready on the node.
        pods = re.findall(r"^(\S+) +(\S+) +1/1 +Running .* modeldeploy-node ", output, re.M)
        kinds = sorted(
            "operator" if ns == "modeldeploy-system" else name.rsplit("-", 2)[0].rsplit("-")[-1]
            for ns, name in pods
        )
        assert kinds == ["operator", "prod", "staging"], output
        assert re.search(r"breast-cancer-local .* Deployed +True", output), output
        assert output.count("POST http://10.0.0.") == 2, output  # staging, then production
    finally:
        down = demo_cluster("down", state)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_under(state) == [], down.stdout + down.stderr
    differences = host_differences(before, host_snapshot())
    assert not differences, "\n".join(differences)
