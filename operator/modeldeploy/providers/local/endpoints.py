"""Local endpoints: supervised `modeldeploy serve` processes on loopback.

They follow SageMaker's endpoint life cycle, so the planner cannot tell the difference:
Creating -> InService once /ping answers, or Failed with the reason when the process dies at
start; an update starts the new config beside the old one on a new port and moves the endpoint
(and its url) there only once the new one answers /ping, else it rolls back and keeps serving
the old config with a failure reason. A serving process that dies is restarted on its port
(SystemUpdating).

Processes run in their own session, so they outlive an operator restart; the operator re-adopts
them from the SQLite table, and each check is a pass over that table plus a /ping. Without
`supervise` (a preview) a check reports the state the next supervising check would record, and
starts, stops and writes nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from modeldeploy.providers.base import ProviderError, TerminalError, TransientError
from modeldeploy.providers.local.registry import Registry
from modeldeploy.remote import Endpoint, InvokeResult

START_TIMEOUT = float(os.environ.get("MODELDEPLOY_LOCAL_START_TIMEOUT", "60"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alive(pid: int | None, model: str) -> bool:
    """True when `pid` is still our server for `model` (not a reused pid)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    return not zombie and model.encode() in cmdline


def ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(pid: int | None, model: str) -> None:
    if alive(pid, model):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
        for _ in range(50):
            if not alive(pid, model):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
    with contextlib.suppress(ChildProcessError, TypeError):
        os.waitpid(pid, os.WNOHANG)  # type: ignore[arg-type]  # reap if it was our child


class Endpoints:
    def __init__(
        self, registry: Registry, root: Path, workers: int = 1, *, supervise: bool = True
    ) -> None:
        self.registry = registry
        self.logs = root / "logs"
        self.workers = workers
        self.supervise = supervise
        if supervise:
            self.logs.mkdir(parents=True, exist_ok=True)

    def _writable(self, what: str) -> None:
        if not self.supervise:
            raise TerminalError(f"{what}: these endpoints are only observed (read-only)")

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/invocations"

    def _log(self, name: str, config: str) -> Path:
        return self.logs / f"{name}--{config}.log"

    def _spawn(self, name: str, config: str, model: str, port: int) -> int:
        log = open(self._log(name, config), "ab")  # noqa: SIM115  (the child keeps it)
        with log:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "modeldeploy",
                    "serve",
                    "--model",
                    model,
                    "--port",
                    str(port),
                    "--workers",
                    str(self.workers),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives an operator restart
            )
        return proc.pid

    def _tail(self, name: str, config: str) -> str:
        try:
            lines = self._log(name, config).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:])[-500:] or "no output"

    # -- the life cycle ------------------------------------------------------------------------

    def deploy(self, name: str, config: str, model: str) -> None:
        self._writable(f"deploying endpoint {name}")
        now = time.time()
        with self.registry.db() as db:
            row = db.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
            if row is None:
                port = free_port()
                pid = self._spawn(name, config, model, port)
                db.execute(
                    "INSERT INTO endpoints (name, port, status, config, model, pid, failure_reason,"
                    " started, updated) VALUES (?, ?, 'Creating', ?, ?, ?, '', ?, ?)",
                    (name, port, config, model, pid, now, now),
                )
                return
            if row["status"] in ("Creating", "Updating", "SystemUpdating"):
                raise TransientError(f"endpoint {name} is {row['status']}")
            if row["status"] == "Failed":
                raise ProviderError(f"endpoint {name} is Failed: delete it first")
            if row["config"] == config:
                return
            port = free_port()
            pid = self._spawn(name, config, model, port)
            db.execute(
                "UPDATE endpoints SET status = 'Updating', pending_config = ?, pending_model = ?,"
                " pending_pid = ?, pending_port = ?, failure_reason = '', started = ?,"
                " updated = ? WHERE name = ?",
                (config, model, pid, port, now, now, name),
            )

    def check(self, name: str) -> Endpoint | None:
        """Advance the endpoint's life cycle from what its processes do; return its state.

        Without `supervise`: the same verdict from the same reads, but nothing is stopped,
        started or written."""
        if not self.registry.exists():
            return None
        act = self.supervise
        with self.registry.db() as db:
            row = db.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            status, reason = row["status"], row["failure_reason"]
            waited = time.time() - row["started"]
            update: dict = {}
            if status in ("Creating", "SystemUpdating"):
                if ping(row["port"]) and alive(row["pid"], row["model"]):
                    update = {"status": "InService", "failure_reason": ""}
                elif not alive(row["pid"], row["model"]) or waited > START_TIMEOUT:
                    if act:
                        stop(row["pid"], row["model"])
                    why = self._tail(name, row["config"])
                    update = {"status": "Failed", "failure_reason": f"server did not start: {why}"}
            elif status == "Updating":
                pending_ok = alive(row["pending_pid"], row["pending_model"])
                if pending_ok and ping(row["pending_port"]):
                    if act:
                        stop(row["pid"], row["model"])
                    update = {
                        "status": "InService",
                        "config": row["pending_config"],
                        "model": row["pending_model"],
                        "pid": row["pending_pid"],
                        "port": row["pending_port"],
                        "pending_config": None,
                        "pending_model": None,
                        "pending_pid": None,
                        "pending_port": None,
                        "failure_reason": "",
                    }
                elif not pending_ok or waited > START_TIMEOUT:
                    # Roll back as SageMaker does: the old config keeps serving.
                    if act:
                        stop(row["pending_pid"], row["pending_model"])
                    why = self._tail(name, row["pending_config"])
                    update = {
                        "status": "InService",
                        "pending_config": None,
                        "pending_model": None,
                        "pending_pid": None,
                        "pending_port": None,
                        "failure_reason": f"update to {row['pending_config']} failed: {why}",
                    }
            elif status == "InService" and not alive(row["pid"], row["model"]):
                update = {"status": "SystemUpdating", "started": time.time()}
                if act:
                    why = f"server process {row['pid']} exited; restarted"
                    update["pid"] = self._spawn(name, row["config"], row["model"], row["port"])
                else:
                    why = f"server process {row['pid']} exited; the operator restarts it"
                update["failure_reason"] = why
            if update and act:
                update["updated"] = time.time()
                sets = ", ".join(f"{k} = ?" for k in update)
                db.execute(f"UPDATE endpoints SET {sets} WHERE name = ?", (*update.values(), name))
            status = update.get("status", status)
            reason = update.get("failure_reason", reason)
            config = update.get("config", row["config"])
            port = update.get("port", row["port"])
        return Endpoint(name, status, config, failure_reason=reason, url=self.url(port))

    def names(self, prefix: str) -> list[str]:
        if not self.registry.exists():
            return []
        with self.registry.db() as db:
            rows = db.execute(
                "SELECT name FROM endpoints WHERE name LIKE ? ESCAPE '\\'",
                (prefix.replace("_", "\\_").replace("%", "\\%") + "%",),
            ).fetchall()
        return [r["name"] for r in rows]

    def delete(self, name: str) -> bool:
        self._writable(f"deleting endpoint {name}")
        with self.registry.db() as db:
            row = db.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
            if row is None:
                return True
            stop(row["pending_pid"], row["pending_model"] or "")
            stop(row["pid"], row["model"])
            db.execute("DELETE FROM endpoints WHERE name = ?", (name,))
        return True

    def invoke(self, name: str, payload: str, content_type: str) -> InvokeResult:
        return post_invocation(self.check(name), name, payload, content_type)


def post_invocation(
    endpoint: Endpoint | None, name: str, payload: str, content_type: str
) -> InvokeResult:
    """POST a payload to an InService endpoint's /invocations, timing the answer."""
    if endpoint is None or endpoint.status != "InService":
        raise TransientError(f"endpoint {name} is not InService")
    request = urllib.request.Request(
        endpoint.url,
        data=payload.encode(),
        headers={"Content-Type": content_type, "Accept": "text/csv"},
        method="POST",
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            body = resp.read()
            ctype = resp.headers.get("Content-Type", "text/csv")
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        raise ProviderError(f"HTTP {err.code}: {detail}") from err
    except (urllib.error.URLError, OSError) as err:
        raise TransientError(f"endpoint {name}: {err}") from err
    return InvokeResult(body, ctype, (time.perf_counter() - start) * 1000)
