"""The local provider's state: one SQLite file, its schema, and every query on it.

It mirrors what the SageMaker Model Registry keeps (version numbers per group, approval status
and description, metrics, the artifact and its digest), with ARN-like identifiers of its own,
plus the process hosting's endpoints. Nothing else in the project runs SQL on this file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from modeldeploy.providers.errors import ProviderError, TransientError
from modeldeploy.providers.local import history
from modeldeploy.remote import PENDING, ModelVersion

SCHEMA = """
CREATE TABLE IF NOT EXISTS groups (
    name TEXT PRIMARY KEY, arn TEXT NOT NULL, description TEXT, created REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS versions (
    grp TEXT NOT NULL REFERENCES groups(name), version INTEGER NOT NULL, arn TEXT NOT NULL,
    approval_status TEXT NOT NULL, approval_description TEXT NOT NULL DEFAULT '',
    framework_version TEXT NOT NULL, source TEXT NOT NULL, artifact TEXT NOT NULL,
    digest TEXT NOT NULL, metrics TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (grp, version));
CREATE UNIQUE INDEX IF NOT EXISTS versions_by_content ON versions (grp, digest, framework_version);
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY, port INTEGER NOT NULL, status TEXT NOT NULL,
    config TEXT NOT NULL, model TEXT NOT NULL, pid INTEGER,
    pending_config TEXT, pending_model TEXT, pending_pid INTEGER, pending_port INTEGER,
    failure_reason TEXT NOT NULL DEFAULT '', started REAL NOT NULL, updated REAL NOT NULL);
"""
TABLES = ("groups", "versions", "endpoints")
log = logging.getLogger(__name__)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def missing_tables(path: Path) -> list[str]:
    """The registry's tables that the file `path` lacks (all of them when there is none)."""
    if not path.is_file():
        return list(TABLES)
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        conn.close()
    present = {name for (name,) in rows}
    return [t for t in TABLES if t not in present]


def group_arn(name: str) -> str:
    return f"local:model-package-group/{name}"


def version_arn(group: str, version: int) -> str:
    return f"local:model-package/{group.lower()}/{version}"


@dataclass(frozen=True)
class EndpointRecord:
    """One row of `endpoints`: a served config, and the one an update starts beside it."""

    name: str
    port: int
    status: str
    config: str
    model: str  # the artifact path the server reads
    pid: int | None
    pending_config: str | None = None
    pending_model: str | None = None
    pending_pid: int | None = None
    pending_port: int | None = None
    failure_reason: str = ""
    started: float = 0.0
    updated: float = 0.0


ENDPOINT_COLUMNS = tuple(f.name for f in dataclasses.fields(EndpointRecord))


class State:
    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        """`read_only` (a preview): creates nothing, and SQLite itself refuses any write.

        Creates the registry of a fresh directory. One that the directory held and lost is
        RegistryLost (`history`), raised by every query rather than here: a pass reports it as
        a stall, where an error building the provider would escape it."""
        self.path = path
        self.read_only = read_only
        self._uri = path.absolute().as_uri()
        self._lock = threading.Lock()
        self._checked: tuple[int, int] | None = None  # the file found whole (device, inode)
        if not read_only:
            try:
                self._ensure()
            except history.RegistryLost as err:
                log.warning("%s", err)

    def exists(self) -> bool:
        """False for a preview before the operator ever ran here (RegistryLost if it did)."""
        if not self.read_only or self.path.is_file():
            return True
        error = history.lost(self.path, TABLES, every_table=True)
        if error is not None:
            raise error
        return False

    def _connect(self, mode: str) -> sqlite3.Connection:
        # mode=rw never creates the file: a deleted registry must not come back empty.
        conn = sqlite3.connect(
            f"{self._uri}?mode={mode}", uri=True, timeout=30, isolation_level=None
        )
        conn.row_factory = sqlite3.Row
        return conn

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per use: the operator reconciles from several threads.
        if not self.read_only:
            self._ensure()
        try:
            conn = self._connect("ro" if self.read_only else "rw")
        except sqlite3.OperationalError as err:
            if self.path.exists():  # unreadable, not lost: say what SQLite says
                raise
            raise self._lost(err) from err  # deleted since it was checked
        try:
            yield conn
        except sqlite3.OperationalError as err:
            if not str(err).startswith("no such table"):
                raise
            raise self._lost(err) from err  # a table dropped under a running operator
        finally:
            conn.close()

    def _lost(self, err: sqlite3.Error) -> ProviderError:
        self._checked = None
        missing = missing_tables(self.path)
        error = history.lost(self.path, missing, every_table=len(missing) == len(TABLES))
        # None: `local reset` asked for a new history meanwhile; the next try creates it.
        return error or TransientError(f"local registry {self.path}: {err}")

    def _ensure(self) -> None:
        """Use the registry whole, create the one of a fresh directory, or raise RegistryLost."""
        if self._checked is not None and _identity(self.path) == self._checked:
            return  # one stat per query once the file was found whole
        with self._lock:
            missing = missing_tables(self.path)
            if missing:
                error = history.lost(self.path, missing, every_table=len(missing) == len(TABLES))
                if error is not None:
                    raise error
                self._create()
            else:
                self._migrate()
            history.mark_in_use(self.path.parent)
            self._checked = _identity(self.path)

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        history.begin(self.path.parent)
        # 0600 before SQLite opens it; its WAL and shared-memory files take this mode.
        os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = self._connect("rw")
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # kept by the file: readers never block
            conn.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")  # no one sees half of it
        finally:
            conn.close()

    def _migrate(self) -> None:
        conn = self._connect("rw")
        try:
            columns = {row["name"] for row in conn.execute("PRAGMA table_info(groups)")}
            if "owner" not in columns:  # a registry written before groups had owners
                conn.execute("ALTER TABLE groups ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
        finally:
            conn.close()

    # -- groups ------------------------------------------------------------------------------

    def group_arn(self, name: str) -> str | None:
        if not self.exists():  # a preview before the operator ever ran here
            return None
        with self._db() as db:
            row = db.execute("SELECT arn FROM groups WHERE name = ?", (name,)).fetchone()
        return row["arn"] if row else None

    def ensure_group(self, name: str, description: str | None, owner: str = "") -> str:
        with self._db() as db:
            db.execute(
                "INSERT OR IGNORE INTO groups (name, arn, description, created, owner)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, group_arn(name), description or "", time.time(), owner),
            )
        return group_arn(name)

    def group_owner(self, arn: str) -> str:
        """The owning ModelDeployment, "" for none (or no such group)."""
        if not self.exists():
            return ""
        with self._db() as db:
            row = db.execute("SELECT owner FROM groups WHERE arn = ?", (arn,)).fetchone()
        return row["owner"] if row else ""

    def release_group(self, arn: str, owner: str) -> None:
        with self._db() as db:
            db.execute("UPDATE groups SET owner = '' WHERE arn = ? AND owner = ?", (arn, owner))

    def claim_group(self, arn: str, owner: str) -> str:
        """Make `owner` the owner of an unowned group; return the owner it has now."""
        with self._db() as db:
            db.execute("UPDATE groups SET owner = ? WHERE arn = ? AND owner = ''", (owner, arn))
            row = db.execute("SELECT owner FROM groups WHERE arn = ?", (arn,)).fetchone()
        return row["owner"] if row else ""

    # -- versions ----------------------------------------------------------------------------

    def versions(self, group: str) -> list[ModelVersion]:
        """Newest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM versions WHERE grp = ? ORDER BY version DESC", (group,)
            ).fetchall()
        return [_version(r) for r in rows]

    def version_by_arn(self, arn: str) -> ModelVersion | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM versions WHERE arn = ?", (arn,)).fetchone()
        return _version(row) if row else None

    def register(
        self,
        group: str,
        *,
        source: str,
        artifact: Path,
        digest: str,
        framework_version: str,
        metrics: dict[str, float],
    ) -> ModelVersion:
        """Add a PendingManualApproval version, or return the one with the same content."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")  # version numbers are allocated under a write lock
            try:
                row = db.execute(
                    "SELECT * FROM versions WHERE grp = ? AND digest = ? AND framework_version = ?",
                    (group, digest, framework_version),
                ).fetchone()
                if row is None:
                    (latest,) = db.execute(
                        "SELECT COALESCE(MAX(version), 0) FROM versions WHERE grp = ?", (group,)
                    ).fetchone()
                    number = latest + 1
                    db.execute(
                        "INSERT INTO versions VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?)",
                        (
                            group,
                            number,
                            version_arn(group, number),
                            PENDING,
                            framework_version,
                            source,
                            str(artifact),
                            digest,
                            json.dumps(metrics),
                            time.time(),
                        ),
                    )
                    row = db.execute(
                        "SELECT * FROM versions WHERE grp = ? AND version = ?", (group, number)
                    ).fetchone()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return _version(row)

    def set_approval(self, arn: str, status: str, description: str) -> bool:
        """False when there is no such version."""
        with self._db() as db:
            cur = db.execute(
                "UPDATE versions SET approval_status = ?, approval_description = ? WHERE arn = ?",
                (status, description, arn),
            )
        return cur.rowcount == 1

    def sources(self, digest: str) -> list[str]:
        """Every URI these bytes were registered from, newest first (any group: the store
        keeps one copy per digest)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT source FROM versions WHERE digest = ? ORDER BY created DESC", (digest,)
            ).fetchall()
        return [r["source"] for r in rows]

    # -- endpoints (the process hosting) -----------------------------------------------------

    def endpoint(self, name: str) -> EndpointRecord | None:
        if not self.exists():
            return None
        with self._db() as db:
            row = db.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
        return EndpointRecord(**dict(row)) if row else None

    def add_endpoint(self, record: EndpointRecord) -> None:
        values = dataclasses.astuple(record)
        marks = ", ".join("?" for _ in values)
        with self._db() as db:
            db.execute(
                f"INSERT INTO endpoints ({', '.join(ENDPOINT_COLUMNS)}) VALUES ({marks})", values
            )

    def update_endpoint(self, name: str, **changes: object) -> None:
        unknown = set(changes) - set(ENDPOINT_COLUMNS)
        if unknown:
            raise ValueError(f"not columns of endpoints: {sorted(unknown)}")
        sets = ", ".join(f"{column} = ?" for column in changes)
        with self._db() as db:
            db.execute(f"UPDATE endpoints SET {sets} WHERE name = ?", (*changes.values(), name))

    def delete_endpoint(self, name: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM endpoints WHERE name = ?", (name,))

    def endpoint_names(self, prefix: str) -> list[str]:
        if not self.exists():
            return []
        with self._db() as db:
            rows = db.execute(
                "SELECT name FROM endpoints WHERE name LIKE ? ESCAPE '\\' ORDER BY name",
                (prefix.replace("_", "\\_").replace("%", "\\%") + "%",),
            ).fetchall()
        return [r["name"] for r in rows]

    # -- for people and tests ----------------------------------------------------------------

    def dump(self) -> dict[str, list[tuple]]:
        """Every row of every table, in a stable order: what "changed nothing" compares."""
        with self._db() as db:
            tables = [
                r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            return {
                t: [tuple(r) for r in db.execute(f"SELECT * FROM {t} ORDER BY 1, 2")]
                for t in tables
            }


def _version(row: sqlite3.Row) -> ModelVersion:
    return ModelVersion(
        version=row["version"],
        arn=row["arn"],
        approval_status=row["approval_status"],
        image=f"modeldeploy-serve (frameworkVersion {row['framework_version']})",
        artifact=row["artifact"],
        metrics=json.loads(row["metrics"]),
        artifact_digest=row["digest"],
        approval_description=row["approval_description"],
    )
