"""`modeldeploy local reset`: start a new history in a directory whose registry was lost.

It stops the directory's endpoint servers (a new history tracks none of them, and a server
left running would serve beside the one the operator starts), sets what is left of the old
registry aside (renamed, never deleted: a person may still want to read it), and writes a marker
that lets the next pass create a new registry. Artifacts and logs are kept. An intact registry
is refused unless forced: resetting it would renumber versions that are still recorded.
"""

from __future__ import annotations

import time
from pathlib import Path

from modeldeploy.providers.local import history
from modeldeploy.providers.local.provider import REGISTRY
from modeldeploy.providers.local.servers import servers_of, stop_server
from modeldeploy.providers.local.state import TABLES, State, missing_tables

REGISTRY_SUFFIXES = ("", "-wal", "-shm")


class ResetRefused(Exception):
    """Nothing to reset, or it would lose what is recorded; the message says which."""


def _intact(db: Path) -> str | None:
    """What an intact registry holds ("groups: 2, versions: 3, endpoints: 1"), or None."""
    if missing_tables(db):
        return None
    counts = {table: len(rows) for table, rows in State(db).dump().items()}
    return ", ".join(f"{t}: {counts.get(t, 0)}" for t in TABLES)


def _set_aside(db: Path) -> Path | None:
    """Rename the registry and its WAL files together (so SQLite can still open them); a WAL
    left without its database goes too, or SQLite would replay it into the new one."""
    parts = [db.with_name(db.name + suffix) for suffix in REGISTRY_SUFFIXES]
    if not any(part.exists() for part in parts):
        return None
    aside = db.with_name(f"{db.stem}-before-reset-{time.strftime('%Y%m%dT%H%M%S')}{db.suffix}")
    for part, suffix in zip(parts, REGISTRY_SUFFIXES, strict=True):
        if part.exists():
            part.rename(aside.with_name(aside.name + suffix))
    return aside


def reset(root: Path, *, force: bool = False) -> list[str]:
    """Reset the history of `root`; the lines that say what was done."""
    if not root.is_dir():
        raise ResetRefused(f"nothing to reset: {root} does not exist")
    db = root / REGISTRY
    holds = _intact(db)
    if holds is not None and not force:
        raise ResetRefused(
            f"the local registry {db} is intact ({holds}): nothing to reset; "
            "--force starts a new history anyway (it stops every endpoint server of the "
            "directory and sets the registry aside)"
        )
    done, stuck = [], []
    for server in servers_of(root):
        if stop_server(server, root):
            done.append(f"stopped endpoint server {server.pid} ({server.endpoint or 'unnamed'})")
        else:
            stuck.append(str(server.pid))
    if stuck:  # the registry stays as it is: a new history must not start beside them
        raise ResetRefused(
            f"endpoint servers {', '.join(stuck)} of {root} did not stop; nothing else was "
            "changed: stop them, then run it again"
        )
    aside = _set_aside(db)
    if aside is not None:
        done.append(f"set the old registry aside as {aside}")
    marker = history.new_marker()
    history.write_marker(root, marker)
    done.append(
        f"new history {marker.id}: the next pass creates {db}, numbering versions from 1 "
        "(artifacts and logs are kept)"
    )
    return done
