"""The `modeldeploy serve` processes of one local directory, tracked by its registry or not.

A server belongs to a directory when its `--model` is a file of that directory's artifact
store (its command line points into the dir); it serves the endpoint that its environment names
(`MODELDEPLOY_LOCAL_ENDPOINT`, set when the process hosting starts it) or, for servers started
before that variable existed, the one its log file (its stdout, `logs/<endpoint>--<config>.log`)
names. Only our own user's processes are looked at. A pid is signalled through a pidfd opened
before its identity is checked again, so a pid reused by an unrelated process is never killed.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from dataclasses import dataclass
from pathlib import Path

from modeldeploy import processes

ENDPOINT_ENV = "MODELDEPLOY_LOCAL_ENDPOINT"
STOP_GRACE = 5.0
KILL_WAIT = 5.0


@dataclass(frozen=True)
class Server:
    pid: int
    model: str  # the --model argument, as its command line holds it
    endpoint: str  # "" when neither its environment nor its log names one


def _model_arg(args: list[bytes]) -> bytes | None:
    """The --model of `... modeldeploy serve --model M ...` (not of its workers, which run
    `-m modeldeploy.serving.workers`: stopping the server stops them)."""
    serve = next(
        (
            i
            for i, a in enumerate(args[:-1])
            if (a == b"modeldeploy" or a.endswith(b"/modeldeploy")) and args[i + 1] == b"serve"
        ),
        None,
    )
    if serve is None:
        return None
    rest = args[serve + 2 :]
    for i, arg in enumerate(rest):
        if arg == b"--model" and i + 1 < len(rest):
            return rest[i + 1]
        if arg.startswith(b"--model="):
            return arg.removeprefix(b"--model=")
    return None


def _endpoint(proc: Path, logs: str) -> str:
    with contextlib.suppress(OSError):
        for item in (proc / "environ").read_bytes().split(b"\0"):
            if item.startswith(f"{ENDPOINT_ENV}=".encode()):
                return item.split(b"=", 1)[1].decode(errors="replace")
    with contextlib.suppress(OSError):
        log = os.readlink(proc / "fd" / "1")  # the hosting's log: <endpoint>--<config>.log
        if os.path.dirname(log) == logs and log.endswith(".log"):
            return os.path.basename(log).split("--", 1)[0]
    return ""


def _dirs(root: Path) -> tuple[str, str]:
    """The artifact store (with a trailing separator) and the logs of `root`, resolved."""
    return str((root / "artifacts").resolve()) + os.sep, str((root / "logs").resolve())


def _server_at(pid: int, store: str, logs: str) -> Server | None:
    proc = Path(f"/proc/{pid}")
    try:
        if proc.stat().st_uid != os.getuid():
            return None
        model = _model_arg((proc / "cmdline").read_bytes().split(b"\0"))
        if model is None:
            return None
        # A relative --model is relative to the server's own working directory.
        where = os.path.normpath(os.path.join(os.readlink(proc / "cwd"), model.decode()))
    except (OSError, UnicodeDecodeError):
        return None
    if not where.startswith(store) or not processes.alive(pid, arg=model.decode()):
        return None  # not this directory's, or a zombie
    return Server(pid, model.decode(), _endpoint(proc, logs))


def server_at(pid: int, root: Path) -> Server | None:
    """The server of `root` that runs as `pid` now, or None (another program, or gone)."""
    return _server_at(pid, *_dirs(root))


def servers_of(root: Path) -> list[Server]:
    """Every running server of `root`, by pid."""
    store, logs = _dirs(root)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (server := _server_at(int(entry.name), store, logs)):
            found.append(server)
    return sorted(found, key=lambda s: s.pid)


def _exits(pidfd: int, seconds: float) -> bool:
    poll = select.poll()
    poll.register(pidfd, select.POLLIN)  # readable once the process has exited
    return bool(poll.poll(int(seconds * 1000)))


def stop_server(server: Server, root: Path, grace: float = STOP_GRACE) -> bool:
    """SIGTERM, then SIGKILL, to `server` if `pid` is still that server; True once it is gone."""
    try:
        pidfd = os.pidfd_open(server.pid)
    except ProcessLookupError:
        return True
    try:
        # The pidfd holds this very process: checked now, the signals cannot reach another.
        if server_at(server.pid, root) != server:
            return True
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, KILL_WAIT)):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, sig)
            if _exits(pidfd, wait):
                processes.reap(server.pid)  # our child (an operator that started it) or not
                return True
        return False
    finally:
        os.close(pidfd)
