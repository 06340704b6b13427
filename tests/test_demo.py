"""`make demo` end to end, through the same script with its own state directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from modeldeploy import processes
from modeldeploy.providers.local.state import State

ROOT = Path(__file__).resolve().parents[1]


def demo(action: str, state: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "demo.py"), action, "--state-dir", str(state), *flags],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def processes_under(state: Path) -> list[str]:
    """Processes whose command line or environment names `state` (the operator is found by its
    MODELDEPLOY_LOCAL_DIR, the servers and the control plane by their arguments)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            text = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (proc / "environ").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(state) in text or str(state) in environ:
            found.append(f"{proc.name}: {text}")
    return found


def lose_track_of_an_endpoint(state: Path) -> int:
    """Forget the staging server's row, as a lost registry does: the server keeps running
    untracked (until the operator's next deploy of it, or `make down`, stops it). Its pid."""
    local = State(state / "local" / "registry.db")
    (name,) = [n for n in local.endpoint_names("") if n.endswith("staging")]
    pid = local.endpoint(name).pid
    local.delete_endpoint(name)
    return pid


def test_demo_reaches_production_and_stops_cleanly(tmp_path):
    state = tmp_path / "demo"
    try:
        up = demo("up", state)
        output = up.stdout + up.stderr
        assert up.returncode == 0, output
        auc = float(re.search(r"AUC on 143 held-out rows: ([0-9.]+)", output).group(1))
        assert auc >= 0.95, output
        assert re.search(r"Production reached in [0-9.]+s", output), output
        assert re.search(r"breast-cancer-local .* Deployed +True", output), output
        assert processes_under(state), "nothing kept running for the user to look around"
        untracked = lose_track_of_an_endpoint(state)
        assert Path(f"/proc/{untracked}").exists()
    finally:
        down = demo("down", state)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_under(state) == [], down.stdout + down.stderr
    # Whoever stopped it first. Not "/proc/<pid> is gone": once the operator that started it has
    # stopped, it is some other process's child, whose zombie may wait to be reaped.
    assert not processes.alive(untracked), down.stdout


def test_demo_project_runs_the_seed_pipeline_through_its_gate(tmp_path):
    """`make demo-project`: the project's pipeline deploys, the operator approves its gate."""
    state = tmp_path / "demo"
    try:
        up = demo("up", state, "--project")
        output = up.stdout + up.stderr
        assert up.returncode == 0, output
        assert "DeployStaging InProgress (ApproveDeployment InProgress)" in output, output
        assert "waits at the pipeline's ApproveDeployment" in output, output
        assert "DeployProd Succeeded" in output, output
        assert re.search(r"breast-cancer-project .* Deployed +True", output), output
        assert (state / "local" / "projects" / "breast-cancer" / "repo").is_dir()
    finally:
        down = demo("down", state)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_under(state) == [], down.stdout + down.stderr
    assert not (state / "local" / "projects" / "breast-cancer").exists()  # deleted with it
