"""A local Kubernetes control plane: etcd + kube-apiserver on loopback, as envtest runs them.

There is no kubelet, scheduler or controller-manager: objects are stored and validated, RBAC and
admission apply, but nothing runs pods, garbage-collects owned objects or finishes namespace
deletion. That is all an operator needs to be tested against the real API.

Everything lives in `state_dir` (0700, its files 0600): pki/, etcd-data/, the logs (etcd.log,
kube-apiserver.log), state.json (pids and ports) and the admin kubeconfig. etcd serves TLS on
loopback and requires a client certificate of its own CA, which only the API server (and
`status`) holds: no other local user or certificate reaches the store behind RBAC. `down` keeps
the ports, and the next `up` binds them again when free, so clients keep their kubeconfigs.
The processes run in their own session so they outlive the command that started them; `up`
reuses them while they run, `down` stops them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from modeldeploy import processes
from modeldeploy.processes import alive as process_alive

from .apiserver import apiserver_argv
from .binaries import Binaries, ensure_binaries
from .kubeconfig import LOOPBACK, write_kubeconfig
from .pki import CertPair, ClusterPKI

STOP_GRACE_SECONDS = 10.0


class ControlPlaneError(RuntimeError):
    pass


def _stop(pid: int, argv0: str) -> None:
    if not processes.stop(pid, argv0, grace=STOP_GRACE_SECONDS):
        raise ControlPlaneError(f"process {pid} ({argv0}) did not exit after SIGKILL")


class ControlPlane:
    """etcd + kube-apiserver for one state directory.

    `binaries` defaults to the output of hack/build-controlplane.sh (built on first `up`).
    `detach=False` ties the processes to the calling thread's lifetime (PR_SET_PDEATHSIG), so a
    crashed test run leaves nothing behind; the CLI keeps the default so the cluster outlives it.
    """

    def __init__(
        self, state_dir: Path, binaries: Binaries | None = None, *, detach: bool = True
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self._binaries = binaries
        self._detach = detach
        self.pki = ClusterPKI(self.state_dir / "pki")
        self.kubeconfig_path = self.state_dir / "kubeconfig"
        self._state_file = self.state_dir / "state.json"
        # What `up` wants a person to know (a port that could not be kept), for the CLI to print.
        self.notices: list[str] = []

    def _log(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    # -- state -------------------------------------------------------------------------------

    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self._state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with open(tmp, "w", opener=processes.private_file) as f:
            f.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self._state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Serialises up/down across processes sharing a state dir (two terminals, test workers).
        processes.private_dir(self.state_dir)
        with open(self.state_dir / ".lock", "w", opener=processes.private_file) as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @staticmethod
    def _running(entry: dict[str, Any] | None) -> bool:
        return bool(entry) and process_alive(entry["pid"], entry["argv0"])

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self, timeout: float = 120.0, node_ip: str | None = None) -> Path:
        """Start what is not running (or reuse what is), wait for /readyz; the admin kubeconfig.

        `node_ip`: the API server serves a node (see `apiserver_argv`) on that address instead
        of loopback; a running API server of the other kind is restarted.
        """
        host = node_ip or LOOPBACK
        with self._locked():
            self.pki.ensure(node=node_ip is not None)
            state = self.read_state()
            etcd, api = state.get("etcd"), state.get("apiserver")
            same_kind = bool(api) and api.get("host", LOOPBACK) == host
            if self._running(etcd) and self._running(api) and same_kind:
                self._wait_ready(api, timeout)
                self._write_kubeconfig(api["port"], host)
                return self.kubeconfig_path
            if self._running(api):  # no etcd behind it, or serving the other kind of cluster
                _stop(api["pid"], api["argv0"])
            binaries = self._binaries or ensure_binaries()
            # The ports of the last run, kept by `down`: a client (an operator) that read the
            # kubeconfig before finds the API server where it was.
            ports = state.get("ports") or {}
            prev_etcd = etcd or {
                "client_port": ports.get("etcd"),
                "peer_port": ports.get("etcd_peer"),
            }
            prev_api = api or {"port": ports.get("apiserver")}
            wanted = prev_api.get("port")
            deadline = time.monotonic() + timeout
            attempts = 3  # a chosen free port can be taken before the server binds it
            for attempt in range(1, attempts + 1):
                started: dict[str, Any] | None = None
                try:
                    if not self._running(etcd):
                        etcd = self._start_etcd(binaries, prev_etcd if attempt == 1 else {})
                        state["etcd"] = etcd
                        self.write_state(state)
                        self._wait_etcd(etcd, deadline)
                    api = self._start_apiserver(
                        binaries, etcd, prev_api if attempt == 1 else {}, host
                    )
                    state["apiserver"] = started = api
                    state["ports"] = {
                        "etcd": etcd["client_port"],
                        "etcd_peer": etcd["peer_port"],
                        "apiserver": api["port"],
                    }
                    self.write_state(state)
                    self._wait_ready(api, max(1.0, deadline - time.monotonic()))
                    break
                except _ExitedEarly:
                    # What this attempt gave up on is stopped by its pid (whatever `alive`
                    # judged), so no API server outlives the record of the next one.
                    if started is not None:
                        processes.stop(started["pid"], grace=2.0)
                    if attempt == attempts:
                        raise
            if wanted and api["port"] != wanted:
                self.notices.append(
                    f"port {wanted} of the previous API server is taken by another program: "
                    f"the API server now listens on {api['port']}. Kubeconfigs written before "
                    f"(and any operator started with one) still point to {wanted}: give them "
                    f"{self.kubeconfig_path} (or user kubeconfigs minted again) and restart them"
                )
            self._write_kubeconfig(api["port"], host)
            return self.kubeconfig_path

    def down(self, purge: bool = False) -> bool:
        """Stop both processes (API server first); True if anything was running.

        `purge` also deletes the state directory (certificates, data, logs).
        """
        if not self.state_dir.is_dir():
            return False
        with self._locked():
            state = self.read_state()
            was_running = False
            for name in ("apiserver", "etcd"):
                entry = state.pop(name, None)
                if entry and process_alive(entry["pid"], entry["argv0"]):
                    was_running = True
                    _stop(entry["pid"], entry["argv0"])
                self.write_state(state)
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return was_running

    def status(self) -> dict[str, Any]:
        state = self.read_state()
        etcd, api = state.get("etcd"), state.get("apiserver")
        out: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "kubeconfig": str(self.kubeconfig_path),
            "running": False,
            "ready": False,
            "etcd": None,
            "apiserver": None,
        }
        if etcd:
            alive = self._running(etcd)
            ctx = self._etcd_ssl_context()
            version = self._get_json(f"{etcd['url']}/version", ctx) if alive else None
            out["etcd"] = {
                "pid": etcd["pid"],
                "alive": alive,
                "url": etcd["url"],
                "version": (version or {}).get("etcdserver"),
            }
        if api:
            alive = self._running(api)
            ready = alive and self._readyz(api)
            version = self._get_json(f"{api['url']}/version") if ready else None
            out["apiserver"] = {
                "pid": api["pid"],
                "alive": alive,
                "url": api["url"],
                "ready": ready,
                "version": (version or {}).get("gitVersion"),
            }
        out["running"] = bool(out["etcd"] and out["etcd"]["alive"]) and bool(
            out["apiserver"] and out["apiserver"]["alive"]
        )
        out["ready"] = out["running"] and out["apiserver"]["ready"]
        return out

    def user_kubeconfig(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig that authenticates as `user` in `groups` (a fresh client certificate).

        RBAC decides what it may do: bind a (Cluster)Role to the user or one of its groups.
        """
        state = self.read_state()
        if not state.get("apiserver"):
            raise ControlPlaneError("control plane is not up")
        pair = self.pki.mint_user(user, groups)
        path = pair.cert.with_suffix(".kubeconfig")
        api = state["apiserver"]
        host = api.get("host", LOOPBACK)
        write_kubeconfig(path, host, api["port"], self.pki.ca.cert, pair, user)
        return path

    # -- etcd --------------------------------------------------------------------------------

    def spawn(self, argv: list[str], log: Path) -> int:
        with open(log, "ab", opener=processes.private_file) as out:
            out.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {argv[0]}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=None if self._detach else processes.die_with_parent,
            )
        return processes.keep(proc)

    def _start_etcd(self, binaries: Binaries, previous: dict[str, Any]) -> dict[str, Any]:
        # Keep earlier ports when free so the recorded URLs stay stable across restarts.
        old = [previous.get("client_port"), previous.get("peer_port")]
        if all(old) and all(processes.port_free(p) for p in old):
            client_port, peer_port = old
        else:
            client_port, peer_port = processes.free_ports(2)
        client = f"https://{LOOPBACK}:{client_port}"
        peer = f"https://{LOOPBACK}:{peer_port}"
        ca, own = self.pki.etcd_ca.cert, self.pki.etcd_server
        argv = [
            str(binaries.etcd),
            "--name=modeldeploy",
            f"--data-dir={self.state_dir / 'etcd-data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=modeldeploy={peer}",
            # Clients and the peer link need a certificate of etcd's own CA.
            "--client-cert-auth",
            f"--trusted-ca-file={ca}",
            f"--cert-file={own.cert}",
            f"--key-file={own.key}",
            "--peer-client-cert-auth",
            f"--peer-trusted-ca-file={ca}",
            f"--peer-cert-file={own.cert}",
            f"--peer-key-file={own.key}",
            # A throwaway local store: skipping fsync makes writes fast on shared disks.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        pid = self.spawn(argv, self._log("etcd"))
        return {
            "pid": pid,
            "argv0": argv[0],
            "client_port": client_port,
            "peer_port": peer_port,
            "url": client,
        }

    def _wait_etcd(self, etcd: dict[str, Any], deadline: float) -> None:
        while True:
            health = self._get_json(f"{etcd['url']}/health", self._etcd_ssl_context())
            if health and health.get("health") == "true":
                return
            self._check_alive(etcd, "etcd")
            if time.monotonic() > deadline:
                log = self._log("etcd")
                tail = processes.log_tail(log)
                raise ControlPlaneError(f"etcd not healthy in time; {log}:\n{tail}")
            time.sleep(0.1)

    # -- kube-apiserver ----------------------------------------------------------------------

    def _start_apiserver(
        self, binaries: Binaries, etcd: dict[str, Any], previous: dict[str, Any], host: str
    ) -> dict[str, Any]:
        port = previous.get("port")
        if not (port and processes.port_free(port)):
            (port,) = processes.free_ports(1)
        cert_dir = self.state_dir / "apiserver-certs"
        processes.private_dir(cert_dir)
        argv = apiserver_argv(binaries, self.pki, etcd["url"], port, cert_dir, host)
        pid = self.spawn(argv, self._log("kube-apiserver"))
        return {
            "pid": pid,
            "argv0": argv[0],
            "port": port,
            "host": host,
            "url": f"https://{host}:{port}",
        }

    def _ssl_context(self, client: CertPair | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca.cert))
        client = client or self.pki.admin
        ctx.load_cert_chain(str(client.cert), str(client.key))
        return ctx

    def _etcd_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.etcd_ca.cert))
        ctx.load_cert_chain(str(self.pki.etcd_client.cert), str(self.pki.etcd_client.key))
        return ctx

    def _readyz(self, api: dict[str, Any]) -> bool:
        try:
            with _opener(self._ssl_context()).open(f"{api['url']}/readyz", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError, ssl.SSLError):
            return False

    def _wait_ready(self, api: dict[str, Any], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._readyz(api):
            self._check_alive(api, "kube-apiserver")
            if time.monotonic() > deadline:
                log = self._log("kube-apiserver")
                raise ControlPlaneError(
                    f"kube-apiserver not ready in {timeout:.0f}s; {log}:\n{processes.log_tail(log)}"
                )
            time.sleep(0.25)

    def _check_alive(self, entry: dict[str, Any], name: str) -> None:
        if not process_alive(entry["pid"], entry["argv0"]):
            log = self._log(name)
            raise _ExitedEarly(f"{name} exited during startup; {log}:\n{processes.log_tail(log)}")

    def _get_json(self, url: str, ctx: ssl.SSLContext | None = None) -> dict[str, Any] | None:
        if ctx is None and url.startswith("https:"):
            ctx = self._ssl_context()
        try:
            with _opener(ctx).open(url, timeout=2) as r:
                return json.loads(r.read())
        except (urllib.error.URLError, OSError, ssl.SSLError, json.JSONDecodeError):
            return None

    def _write_kubeconfig(self, port: int, host: str) -> None:
        pki = self.pki
        write_kubeconfig(self.kubeconfig_path, host, port, pki.ca.cert, pki.admin, "admin")


class _ExitedEarly(ControlPlaneError):
    """A process died before it was ready: often a port taken in between; worth a retry."""


def _opener(ctx: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    # An empty ProxyHandler: HTTP(S)_PROXY must never route loopback traffic.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    return urllib.request.build_opener(*handlers)
