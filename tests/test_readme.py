"""README's quick start runs exactly as written (on a free port, against a fresh emulator)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from emulator import free_port

ROOT = Path(__file__).resolve().parents[1]


def quickstart() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- quickstart -->\n```sh\n(.*?)```\n<!-- /quickstart -->", text, re.S)
    assert block, "README.md lost its quickstart block"
    return block.group(1)


def test_readme_quickstart_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["EMULATOR_PORT"] = str(free_port())
    subprocess.run(["hack/emulator.sh", "stop"], cwd=ROOT, check=True)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", quickstart()],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"arn:aws:sagemaker:us-east-1:\d{12}:model-package/", output), output
    assert "held-out:" in output and "auc" in output
    assert "latest version 1 PendingManualApproval" in output, output
    assert "next pass would" in output
