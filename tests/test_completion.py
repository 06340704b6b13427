"""`modeldeploy completion bash`: the script bash really loads completes subcommands and options
from the CLI's own parser (new subcommands included, with nothing to regenerate)."""

from __future__ import annotations

import re
import subprocess
import sys

from modeldeploy.cli import build_parser

COMPLETE = """
source <("{python}" -m modeldeploy completion bash)
func=$(complete -p modeldeploy | sed -E 's/.* -F ([^ ]+) .*/\\1/')
COMP_LINE="$LINE"; COMP_POINT=${{#COMP_LINE}}
read -r -a COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
"$func" modeldeploy "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""


def complete(line: str) -> list[str]:
    result = subprocess.run(
        ["bash", "-c", COMPLETE.format(python=sys.executable)],
        env={"LINE": line, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(w.strip() for w in result.stdout.splitlines() if w.strip())


def test_every_subcommand_completes() -> None:
    usage = build_parser().format_usage()  # "usage: modeldeploy [-h] ... {run,train,...} ..."
    commands = set(re.search(r"\{([^}]*)\}", usage).group(1).split(","))  # type: ignore[union-attr]
    assert {"run", "train", "approve", "reject", "report", "completion"} <= commands
    assert set(complete("modeldeploy ")) >= commands
    assert complete("modeldeploy ap") == ["approve"]


def test_options_and_choices_complete() -> None:
    assert "--version" in complete("modeldeploy promote x --")
    assert complete("modeldeploy cluster ") == ["down", "kubeconfig", "purge", "status", "up"]
