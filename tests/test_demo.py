"""`make demo` end to end, through the same script with its own state directory."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def demo(action: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "demo.py"), action, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def processes_under(state: Path) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(state) in text:
            found.append(text)
    return found


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
    finally:
        down = demo("down", state)
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_under(state) == []
