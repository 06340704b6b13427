"""The local provider's state: one SQLite file, its schema, and every query on it.

It mirrors what the SageMaker Model Registry keeps (version numbers per group, approval status
and description, metrics, the artifact and its digest), with ARN-like identifiers of its own,
plus the process hosting's endpoints. Nothing else in the project runs SQL on this file.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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
        """`read_only` (a preview): creates nothing, and SQLite itself refuses any write."""
        self.path = path
        self.read_only = read_only
        if read_only:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept by the file: readers never block
            db.executescript(SCHEMA)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(groups)")}
            if "owner" not in columns:  # a registry written before groups had owners
                db.execute("ALTER TABLE groups ADD COLUMN owner TEXT NOT NULL DEFAULT ''")

    def exists(self) -> bool:
        return not self.read_only or self.path.is_file()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per use: the operator reconciles from several threads.
        if self.read_only:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        else:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            yield conn
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
