"""The history a local registry holds, and what a lost one is.

The registry (registry.db) is the only record of version numbers and of which server serves
which endpoint. A fresh one in its place would number versions from 1 again and start every
endpoint beside its old, untracked server. So the first registry of a directory leaves a marker
beside it, `registry.id` (a random id, when the history began, whether a database holds it),
and a database that is missing or lacks tables while the marker, the artifacts or the servers'
logs say there was one is `RegistryLost`: terminal, judged again every pass, until a person
restores the file or runs `modeldeploy local reset`, which writes a marker for a new history.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from modeldeploy import processes
from modeldeploy.providers.errors import TerminalError
from modeldeploy.providers.local.servers import servers_of

MARKER = "registry.id"


class RegistryLost(TerminalError):
    """The registry of a directory that held a history is gone or damaged."""


@dataclass(frozen=True)
class Marker:
    id: str
    created: str  # when the history began (UTC)
    in_use: bool  # a database holds this history (False: a new one may be created)


def new_marker() -> Marker:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return Marker(secrets.token_hex(6), created, in_use=False)


def read_marker(root: Path) -> Marker | None:
    try:
        raw = json.loads((root / MARKER).read_text())
        return Marker(str(raw["id"]), str(raw["created"]), bool(raw["in_use"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Damaged, yet it says a history was here: never a reason to start a new one.
        return Marker("unreadable", "at an unknown time", in_use=True)


def write_marker(root: Path, marker: Marker) -> None:
    """Atomically, 0600 (like the registry itself)."""
    processes.write_private_json(root / MARKER, asdict(marker))


def begin(root: Path) -> None:
    """Before a new database is created: a marker for its history, unless `reset` left one."""
    if read_marker(root) is None:
        write_marker(root, new_marker())


def mark_in_use(root: Path) -> None:
    """A database with every table holds the history: a later loss of it is detected."""
    marker = read_marker(root)
    if marker is None:  # a registry older than the marker
        write_marker(root, replace(new_marker(), in_use=True))
    elif not marker.in_use:
        write_marker(root, replace(marker, in_use=True))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def traces(root: Path) -> list[str]:
    """What an earlier history left besides its registry: stored artifacts, server logs."""
    found = []
    with contextlib.suppress(OSError):
        if count := sum(1 for p in (root / "artifacts").iterdir() if p.is_dir()):
            found.append(_plural(count, "stored artifact"))
    with contextlib.suppress(OSError):
        if count := sum(1 for _ in (root / "logs").glob("*.log")):
            found.append(_plural(count, "server log"))
    return found


def lost(db: Path, missing: Sequence[str], *, every_table: bool) -> RegistryLost | None:
    """Why the registry `db`, lacking the tables `missing`, cannot be used; None when it may be
    created: the directory never held a history, or `reset` asked for a new one."""
    root = db.parent
    marker = read_marker(root)
    if every_table and marker is not None and not marker.in_use:
        return None  # `reset` (or a first start cut short) asked for a new history
    running, left = servers_of(root), traces(root)
    if every_table and marker is None and not left and not running:
        return None  # a fresh directory
    if marker is not None:
        evidence = f"id {marker.id}, created {marker.created}"
    else:
        held = ", ".join(left + ([_plural(len(running), "server")] if running else []))
        evidence = f"no {MARKER} beside it, but it still holds {held}"
    pids = ", ".join(str(s.pid) for s in running)
    one = len(running) == 1
    serving = (
        f"{_plural(len(running), 'endpoint server')} of it still run{'s' if one else ''}: "
        f"pid{'' if one else 's'} {pids}"
        if running
        else "no endpoint server of it runs"
    )
    if not every_table:
        tables = "table" if len(missing) == 1 else "tables"
        cause = f"the local registry {db} has lost its {tables} {', '.join(missing)}"
    elif db.is_file():
        cause = f"the local registry {db} is empty but {root} held one"
    else:
        cause = f"the local registry {db} is gone but {root} held one"
    stops = "stop its servers and " if running else ""
    return RegistryLost(
        f"{cause} ({evidence}; {serving}): restore {db} from a backup, or run "
        f"`modeldeploy local reset --dir {root}` to {stops}start a new history "
        "(version numbers start again at 1)"
    )
