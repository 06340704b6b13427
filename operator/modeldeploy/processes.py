"""Processes that outlive the call that started them: free loopback ports, whether a pid is still
the program we started, and stopping it. Used by the local provider's endpoint servers and by
the local control plane (etcd, kube-apiserver).

Pids are recorded on disk and read back by a later process, so every check reads /proc and
confirms the command line (pids are reused). A zombie is dead: it is reaped when it is our
child, and never counted as running.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
log = logging.getLogger(__name__)
# Children started in this process, by pid: reaping goes through Popen so it knows the child
# is gone (and does not warn, when collected, about a child it thinks still runs).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def keep(proc: subprocess.Popen[bytes]) -> int:
    """Remember a child we started so `reap` can collect it; returns its pid."""
    _CHILDREN[proc.pid] = proc
    return proc.pid


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports that were free a moment ago."""
    socks = []
    try:  # all held open until every port is chosen, so the n are distinct
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def port_free(port: int) -> bool:
    """Whether a server could listen on `port` now. SO_REUSEADDR as servers set it (Go's do):
    connections that ended a moment ago (TIME_WAIT) do not hold the port, a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def reap(pid: int) -> bool:
    """Collect a child's exit status; True unless it is our child and has not finished exiting.

    A process's first thread turns zombie while its other threads still exit (Go servers), so
    only the reaping itself says that a child is done."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return False
        del _CHILDREN[pid]
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # not ours: its parent collects it
    return done == pid


def _state(pid: int) -> str | None:
    """The process state letter (R, S, Z, ...), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The state letter follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[-1].split()[0]


def _gone(pid: int) -> bool:
    state = _state(pid)
    return state is None or (state in ("Z", "X") and reap(pid))


def alive(pid: int | None, argv0: str | None = None, *, arg: str | None = None) -> bool:
    """True if `pid` runs (a zombie does not) and is the program we mean: its first argument is
    `argv0`, and `arg` is one of its arguments, when given."""
    if not pid:
        return False
    state = _state(pid)
    if state in (None, "Z", "X"):
        if state:
            reap(pid)
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    if argv0 is not None and cmdline[0].decode(errors="replace") != argv0:
        return False  # another program under a reused pid (or one exiting: no cmdline left)
    return arg is None or arg.encode() in cmdline


def stop(
    pid: int | None,
    argv0: str | None = None,
    *,
    arg: str | None = None,
    grace: float = 10.0,
    kill_wait: float = 5.0,
) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; True once it has exited and, if it was our
    child, been reaped."""
    if not pid or not alive(pid, argv0, arg=arg):
        return True
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, kill_wait)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _gone(pid):
                return True
            time.sleep(0.05)
    return _gone(pid)


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner can open (0700): created so, or tightened (with a
    log line) when it exists with more. Everything under it is then closed to other users,
    whatever the files' own modes."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o700)
        log.warning("tightened %s from %o to 700: it holds private state", path, mode)
    return path


def private_file(path: Path, flags: int) -> int:
    """An `opener` for open(): files it creates are 0600 (an existing file keeps its mode)."""
    return os.open(path, flags, 0o600)


def write_private_json(path: Path, value: object, indent: int | None = None) -> None:
    """Replace `path` whole with `value` as JSON, 0600: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", opener=private_file) as f:
            json.dump(value, f, indent=indent)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """A `preexec_fn`: runs in the child between fork and exec, so that it is sent SIGTERM when
    the thread that started it exits (a crashed test run leaves nothing behind)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def log_tail(path: Path, lines: int = 25) -> str:
    """The last lines of a child's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
