"""Process hosting of the local provider: supervised `modeldeploy serve` processes on loopback.

They follow SageMaker's endpoint life cycle, so the planner cannot tell the difference:
Creating -> InService once /ping answers, or Failed with the reason when the process dies at
start; an update starts the new config beside the old one on a new port and moves the endpoint
(and its url) there only once the new one answers /ping, else it rolls back and keeps serving
the old config with a failure reason. A serving process that dies is restarted on its port
(SystemUpdating).

Processes run in their own session, so they outlive an operator restart; the operator re-adopts
them from the state's `endpoints` table, and each look is a read of that row plus a /ping.
Without `supervise` (a preview) a look reports the state the next supervising look would
record, and starts, stops and writes nothing.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from modeldeploy import processes
from modeldeploy.processes import alive
from modeldeploy.providers.errors import (
    TerminalError,
    TransientError,
    from_endpoint,
    read_only_refusal,
    unreachable,
)
from modeldeploy.providers.local.servers import ENDPOINT_ENV, servers_of, stop_server
from modeldeploy.providers.local.state import EndpointRecord, State
from modeldeploy.remote import DeployRequest, Endpoint, EndpointStatus, InvokeResult

START_TIMEOUT = float(os.environ.get("MODELDEPLOY_LOCAL_START_TIMEOUT", "60"))
STOP_GRACE = 5.0
log = logging.getLogger(__name__)
_CLEAR_PENDING = {
    "pending_config": None,
    "pending_model": None,
    "pending_pid": None,
    "pending_port": None,
}


def ping(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(pid: int | None, model: str | None) -> None:
    processes.stop(pid, arg=model or "", grace=STOP_GRACE)


# A native backtrace (xgboost's `[bt] (6) ...`, a Python `  File "...", line 3`) says where, not
# why: the reason is the line before the frames.
_FRAME = re.compile(
    r"^\s*(\[bt\]|Stack trace:|Traceback \(most recent call last\)|File \"|at |#\d+ )"
)
_SAYS_WHY = re.compile(r"Error|error:|Exception|exception:|No such file|denied|refused")
MAX_REASON = 500


def reason_line(log: str) -> str:
    """The line of a server log that says why it stopped: the last line naming an error
    ("Error", "error:", ...), else the last line that is neither blank nor a backtrace frame."""
    lines = [ln.strip() for ln in log.splitlines()]
    lines = [ln for ln in lines if ln and not _FRAME.match(ln)]
    if not lines:
        return ""
    why = next((ln for ln in reversed(lines) if _SAYS_WHY.search(ln)), lines[-1])
    return why[:MAX_REASON]


def first_line(answer: str) -> str:
    """The first non-blank line of an endpoint's answer, bounded."""
    return next((ln.strip() for ln in answer.splitlines() if ln.strip()), "")[:300]


class ProcessHosting:
    def __init__(self, state: State, root: Path, workers: int = 1, *, supervise: bool = True):
        self.state = state
        self.root = root
        self.logs = root / "logs"
        self.workers = workers
        self.supervise = supervise
        if supervise:
            processes.private_dir(self.logs)

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}/invocations"

    def _log(self, name: str, config: str) -> Path:
        return self.logs / f"{name}--{config}.log"

    def _spawn(self, name: str, config: str, model: str, port: int) -> int:
        self._stop_untracked(name)
        # 0600: a server's log may quote payloads. The child keeps its own copy of the file.
        with open(self._log(name, config), "ab", opener=processes.private_file) as log:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "modeldeploy", "serve", "--model", model),
                    *("--port", str(port), "--workers", str(self.workers)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, ENDPOINT_ENV: name},  # whose server it is, for `servers`
                start_new_session=True,  # outlives an operator restart
            )
        return processes.keep(proc)

    def _stop_untracked(self, name: str) -> None:
        """Stop the servers of `name` that no row tracks (a lost row, a lost registry): one
        endpoint never has two servers, and none is left running unseen."""
        row = self.state.endpoint(name)
        tracked = {row.pid, row.pending_pid} if row else set()
        for server in servers_of(self.root):
            if server.endpoint != name or server.pid in tracked:
                continue
            log.warning(
                "endpoint %s: stopping server %d, which the local registry does not track,"
                " before starting one",
                name,
                server.pid,
            )
            if not stop_server(server, self.root):
                raise TransientError(f"endpoint {name}: untracked server {server.pid} did not stop")

    def _tail(self, name: str, config: str) -> str:
        try:
            with open(self._log(name, config), "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))  # the end says why
                text = f.read().decode(errors="replace")
        except OSError:
            return "no log"
        return reason_line(text) or "no output"

    # -- the life cycle ------------------------------------------------------------------------

    def deploy(self, request: DeployRequest) -> None:
        """Start the server of `request.config_name`; instance type and count do not apply to
        processes on this machine."""
        name, config, model = request.endpoint_name, request.config_name, request.version.artifact
        if not self.supervise:
            raise read_only_refusal(f"deploying endpoint {name}")
        now = time.time()
        row = self.state.endpoint(name)
        if row is None:
            port = processes.free_port()
            pid = self._spawn(name, config, model, port)
            status = EndpointStatus.CREATING
            record = EndpointRecord(
                name, port, status, config, model, pid, started=now, updated=now
            )
            self.state.add_endpoint(record)
            return
        if row.status == EndpointStatus.FAILED:
            raise TerminalError(f"endpoint {name} is Failed: delete it first")
        asked = row.pending_config if row.status == EndpointStatus.UPDATING else row.config
        if asked == config:
            return  # already asked for (before a restart), as SageMaker hosting treats it
        if EndpointStatus.is_transitional(row.status):
            raise TransientError(f"endpoint {name} is {row.status}")
        port = processes.free_port()
        pid = self._spawn(name, config, model, port)
        self.state.update_endpoint(
            name,
            status=EndpointStatus.UPDATING,
            pending_config=config,
            pending_model=model,
            pending_pid=pid,
            pending_port=port,
            failure_reason="",
            started=now,
            updated=now,
        )

    def describe(self, name: str) -> Endpoint | None:
        """Advance the endpoint's life cycle from what its processes do; return its state.

        Without `supervise`: the same verdict from the same reads, but nothing is stopped,
        started or written."""
        row = self.state.endpoint(name)
        if row is None:
            return None
        update = self._next(row)
        if update and self.supervise:
            self.state.update_endpoint(name, **update, updated=time.time())
        status = update.get("status", row.status)
        reason = update.get("failure_reason", row.failure_reason)
        config = update.get("config", row.config)
        port = update.get("port", row.port)
        return Endpoint(name, status, config, failure_reason=reason, url=self.url(port))

    def _next(self, row: EndpointRecord) -> dict:
        """The changes to `row` that its processes call for (acting on them when supervising)."""
        act, status = self.supervise, row.status
        waited = time.time() - row.started
        if status in (EndpointStatus.CREATING, EndpointStatus.SYSTEM_UPDATING):
            if ping(row.port) and alive(row.pid, arg=row.model):
                return {"status": EndpointStatus.IN_SERVICE, "failure_reason": ""}
            if not alive(row.pid, arg=row.model) or waited > START_TIMEOUT:
                if act:
                    stop(row.pid, row.model)
                why = f"server did not start: {self._tail(row.name, row.config)}"
                return {"status": EndpointStatus.FAILED, "failure_reason": why}
        elif status == EndpointStatus.UPDATING:
            pending_ok = alive(row.pending_pid, arg=row.pending_model or "")
            if pending_ok and row.pending_port and ping(row.pending_port):
                if act:
                    stop(row.pid, row.model)
                return {
                    "status": EndpointStatus.IN_SERVICE,
                    "config": row.pending_config,
                    "model": row.pending_model,
                    "pid": row.pending_pid,
                    "port": row.pending_port,
                    **_CLEAR_PENDING,
                    "failure_reason": "",
                }
            if not pending_ok or waited > START_TIMEOUT:
                # Roll back as SageMaker does: the old config keeps serving.
                if act:
                    stop(row.pending_pid, row.pending_model)
                why = self._tail(row.name, row.pending_config or "")
                return {
                    "status": EndpointStatus.IN_SERVICE,
                    **_CLEAR_PENDING,
                    "failure_reason": f"update to {row.pending_config} failed: {why}",
                }
        elif status == EndpointStatus.IN_SERVICE and not alive(row.pid, arg=row.model):
            update: dict = {"status": EndpointStatus.SYSTEM_UPDATING, "started": time.time()}
            if act:
                update["failure_reason"] = f"server process {row.pid} exited; restarted"
                update["pid"] = self._spawn(row.name, row.config, row.model, row.port)
            else:
                update["failure_reason"] = (
                    f"server process {row.pid} exited; the operator restarts it"
                )
            return update
        return {}

    def names(self, prefix: str) -> list[str]:
        return self.state.endpoint_names(prefix)

    def delete(self, name: str) -> bool:
        if not self.supervise:
            raise read_only_refusal(f"deleting endpoint {name}")
        row = self.state.endpoint(name)
        if row is None:
            return True
        stop(row.pending_pid, row.pending_model)
        stop(row.pid, row.model)
        self.state.delete_endpoint(name)
        return True

    def invoke(self, name: str, payload: str, content_type: str) -> InvokeResult:
        return post_invocation(self.describe(name), name, payload, content_type)


def post_invocation(
    endpoint: Endpoint | None, name: str, payload: str, content_type: str
) -> InvokeResult:
    """POST a payload to an InService endpoint's /invocations, timing the answer."""
    if endpoint is None or endpoint.status != EndpointStatus.IN_SERVICE:
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
        try:
            answer = first_line(err.read(64 * 1024).decode(errors="replace"))
        except OSError:  # the answer broke off: its status still says something
            answer = ""
        raise from_endpoint(err.code, answer or f"{err.reason} (no answer body)") from err
    except (urllib.error.URLError, OSError) as err:
        raise unreachable(err, f"endpoint {name}") from err
    return InvokeResult(body, ctype, (time.perf_counter() - start) * 1000)
