"""The build scripts' progress display: redrawn in place on a terminal, silent in a pipe, and the
wrapped command's exit status kept either way."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "hack" / "lib" / "progress.sh"


def _script(command: str) -> list[str]:
    return ["bash", "-c", f'source "{LIB}"; with_progress "building thing" {command}']


def _on_a_terminal(command: str) -> tuple[int, str]:
    """Run with stderr (and stdout) on a pseudo-terminal; return status and what it showed."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(_script(command), stdout=follower, stderr=follower, close_fds=True)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return proc.wait(timeout=30), shown.decode(errors="replace")


def test_a_terminal_sees_the_elapsed_time_redrawn_in_place() -> None:
    status, shown = _on_a_terminal("sleep 2.5")
    assert status == 0
    assert "\rbuilding thing 0s" in shown.replace("\x1b[K", "")
    assert "building thing 2s" in shown
    assert shown.endswith("\r\x1b[K")  # the line is cleared for the log line that follows


def test_a_pipe_sees_only_the_commands_own_output() -> None:
    result = subprocess.run(_script("echo done"), capture_output=True, text=True, check=True)
    assert (result.stdout, result.stderr) == ("done\n", "")


def test_the_commands_exit_status_is_kept() -> None:
    assert subprocess.run(_script("false"), capture_output=True).returncode == 1
    assert _on_a_terminal("exit 3")[0] == 3
