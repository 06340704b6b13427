"""Faults and the messages they leave: an API server outage under a running operator, the
control plane's port across restarts, private local state, and reasons a person can act on."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import ssl
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kube import CRD_NAME, kubectl, kubectl_path
from operator_process import OperatorProcess, free_port, wait_for
from providers import deploy_request

from modeldeploy import naming
from modeldeploy.cluster import ClusterPKI, ControlPlane, wait_established
from modeldeploy.providers.errors import TerminalError
from modeldeploy.providers.local import LocalProvider
from modeldeploy.providers.local.hosting_process import ProcessHosting, post_invocation
from modeldeploy.providers.local.state import State
from modeldeploy.remote import Endpoint, EndpointStatus
from modeldeploy.spec import parse_spec
from modeldeploy.training.train import train

# The session fixtures `control_plane` and `kubeconfig`.
pytest_plugins = ["kube"]
ROOT = Path(__file__).resolve().parents[1]

XGBOOST_DEATH = """\
[08:01:02] WARNING: loading the model
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/xgboost/core.py", line 284, in _check_call
    raise XGBoostError(py_str(_LIB.XGBGetLastError()))
xgboost.core.XGBoostError: [08:01:02] /workspace/src/common/io.h:62: Invalid model format: \
expected a binary header
Stack trace:
  [bt] (0) /venv/lib/python3.11/site-packages/xgboost/lib/libxgboost.so(+0x2a6acc) [0x7f]
  [bt] (5) /venv/lib/python3.11/site-packages/xgboost/lib/libxgboost.so(XGBoosterLoadModel)
  [bt] (6) /lib/x86_64-linux-gnu/libffi.so.8(+0x7e2e) [0x7f]


"""


def test_a_server_that_dies_at_start_reports_why_not_its_backtrace(tmp_path: Path) -> None:
    hosting = ProcessHosting(State(tmp_path / "registry.db"), tmp_path)
    hosting._log("ep", "cfg").write_text(XGBOOST_DEATH)
    why = hosting._tail("ep", "cfg")
    assert why.startswith("xgboost.core.XGBoostError:"), why
    assert "Invalid model format" in why and "[bt]" not in why
    hosting._log("ep", "quiet").write_text("\n\n")
    assert hosting._tail("ep", "quiet") == "no output"
    hosting._log("ep", "plain").write_text("serving on 8080\nport 8080 in use, giving up\n\n")
    assert hosting._tail("ep", "plain") == "port 8080 in use, giving up"


@pytest.fixture
def answers_500() -> Iterator[str]:
    """A loopback endpoint whose every answer is a 500 with a multi-line body."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b"\nmodel error: feature_names mismatch: expected 30, got 2\ndetail\n"
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/invocations"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_smoke_test_hitting_a_500_names_the_first_line_of_the_answer(answers_500: str) -> None:
    endpoint = Endpoint("ep", EndpointStatus.IN_SERVICE, "cfg", url=answers_500)
    with pytest.raises(TerminalError) as err:
        post_invocation(endpoint, "ep", "1,2", "text/csv")
    assert str(err.value) == "HTTP 500: model error: feature_names mismatch: expected 30, got 2"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def api_port(cp: ControlPlane) -> int:
    return int(cp.status()["apiserver"]["url"].rsplit(":", 1)[1])


def test_cluster_up_keeps_its_port_across_down_and_up(tmp_path: Path) -> None:
    """A running operator's kubeconfig stays good across `cluster down` / `cluster up`; a port
    taken in between is replaced with a notice saying what to do."""
    cp = ControlPlane(tmp_path / "cp", detach=False)
    try:
        cp.up()
        port = api_port(cp)
        kubeconfig = cp.kubeconfig_path.read_text()
        cp.down()
        cp.up()
        assert api_port(cp) == port
        assert cp.kubeconfig_path.read_text() == kubeconfig
        assert cp.notices == []

        cp.down()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            again = ControlPlane(tmp_path / "cp", detach=False)
            again.up()
            assert api_port(again) != port
        assert len(again.notices) == 1
        assert f"port {port} of the previous API server is taken" in again.notices[0]
        assert str(again.kubeconfig_path) in again.notices[0]
    finally:
        cp.down(purge=True)


def open_to_others(root: Path) -> list[str]:
    return [
        f"{p} {mode(p):o}"
        for p in [root, *root.rglob("*")]
        if not p.is_symlink() and mode(p) & 0o077
    ]


def etcd_get(url: str, ctx: ssl.SSLContext | None) -> bytes:
    handlers = [urllib.request.ProxyHandler({})]
    if ctx is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ctx))
    with urllib.request.build_opener(*handlers).open(url, timeout=5) as r:
        return r.read()


def test_etcd_answers_only_the_api_servers_certificate(control_plane: ControlPlane) -> None:
    etcd = control_plane.status()["etcd"]
    assert etcd["alive"] and etcd["version"], etcd  # status reads it with the etcd client cert
    url, pki = etcd["url"], control_plane.pki
    assert url.startswith("https://127.0.0.1:")
    port = url.rsplit(":", 1)[1]
    with pytest.raises(OSError):  # plain HTTP: no answer an etcd client could use
        etcd_get(f"http://127.0.0.1:{port}/v3/kv/range", None)

    def ctx(client: tuple[Path, Path] | None) -> ssl.SSLContext:
        c = ssl.create_default_context(cafile=str(pki.etcd_ca.cert))
        if client:
            c.load_cert_chain(*map(str, client))
        return c

    with pytest.raises(OSError):  # TLS without a client certificate
        etcd_get(f"{url}/version", ctx(None))
    user = pki.mint_user("etcd-intruder", ["system:masters"])
    with pytest.raises(OSError):  # a certificate of the cluster CA, even system:masters
        etcd_get(f"{url}/version", ctx((user.cert, user.key)))
    ok = etcd_get(f"{url}/health", ctx((pki.etcd_client.cert, pki.etcd_client.key)))
    assert json.loads(ok)["health"] == "true"


def test_control_plane_state_is_private(control_plane: ControlPlane) -> None:
    assert mode(control_plane.state_dir) == 0o700
    assert open_to_others(control_plane.state_dir) == []


def test_an_open_state_dir_is_tightened_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki_dir = tmp_path / "pki"
    pki_dir.mkdir(mode=0o755)
    pki_dir.chmod(0o755)
    with caplog.at_level(logging.WARNING):
        ClusterPKI(pki_dir).ensure()
    assert open_to_others(pki_dir) == []
    assert f"tightened {pki_dir} from 755 to 700" in caplog.text


# -- an API server outage under a running operator -------------------------------------------


def failing_resource(kubeconfig: Path, ns: str, name: str) -> None:
    """A ModelDeployment whose artifact does not exist: the operator's first pass writes a status
    (the reason), which is all this needs to see that it reads and writes the API."""
    doc = yaml.safe_load((ROOT / "manifests" / "examples" / "local.yaml").read_text())
    doc["metadata"] |= {"name": name, "namespace": ns}
    doc["spec"]["modelPackageGroup"]["name"] = name
    doc["spec"]["model"]["artifact"] = f"file:///nonexistent/{name}/model.tar.gz"
    doc["spec"]["model"].pop("metrics")
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump(doc))


def has_status(kubeconfig: Path, ns: str, name: str) -> Callable[[], object]:
    def probe() -> object:
        found = kubectl(kubeconfig, "-n", ns, "get", "mdep", name, "-o", "json", check=False)
        status = json.loads(found.stdout).get("status") if found.returncode == 0 else None
        probe.last = status  # type: ignore[attr-defined]
        return status and status.get("message")

    return probe


def liveness(url: str) -> int:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


@pytest.fixture
def outage_cluster(tmp_path: Path) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path / "cp", detach=False)
    try:
        cp.up()
        kubectl(cp.kubeconfig_path, "apply", "-f", str(ROOT / "crds" / "modeldeployment.yaml"))
        wait_established(kubectl_path(), cp.kubeconfig_path, CRD_NAME)
        kubectl(cp.kubeconfig_path, "create", "namespace", "outage")
        yield cp
    finally:
        cp.down(purge=True)


@pytest.mark.parametrize("outage", [15, 75], ids=["short", "longer-than-kopf-retries"])
def test_the_operator_resumes_after_an_api_server_outage(
    outage_cluster: ControlPlane, tmp_path: Path, outage: float
) -> None:
    cp, kc = outage_cluster, outage_cluster.kubeconfig_path
    health = f"http://127.0.0.1:{free_port()}/healthz"
    env = {"MODELDEPLOY_DEFAULT_PROVIDER": "local", "MODELDEPLOY_LOCAL_DIR": str(tmp_path / "l")}
    op = OperatorProcess(kc, env, ("--liveness", health))
    op.start()
    try:
        failing_resource(kc, "outage", "before")
        wait_for("a status before the outage", has_status(kc, "outage", "before"), operator=op)
        assert liveness(health) == 200

        cp.down()
        time.sleep(outage)
        cp.up()
        assert cp.notices == []  # the same port: the operator's kubeconfig still holds

        failing_resource(kc, "outage", "after")
        wait_for(
            "a status written after the outage",
            has_status(kc, "outage", "after"),
            operator=op,
            timeout=120,
        )
        assert liveness(health) == 200, op.tail()
    finally:
        op.stop()


def test_liveness_fails_once_the_api_server_is_gone_past_the_grace(
    outage_cluster: ControlPlane, tmp_path: Path
) -> None:
    """The kubelet restarts an operator that lost its API server for longer than the grace
    (a restarted process reads its configuration again); within the grace it stays alive."""
    cp, kc = outage_cluster, outage_cluster.kubeconfig_path
    health = f"http://127.0.0.1:{free_port()}/healthz"
    env = {
        "MODELDEPLOY_DEFAULT_PROVIDER": "local",
        "MODELDEPLOY_LOCAL_DIR": str(tmp_path / "l"),
        "MODELDEPLOY_LIVENESS_GRACE_SECONDS": "4",
    }
    op = OperatorProcess(kc, env, ("--liveness", health))
    op.start()
    try:
        wait_for("a live operator", lambda: liveness(health) == 200, operator=op)
        cp.down()
        wait_for("liveness failing", lambda: liveness(health) == 500, timeout=60, operator=op)
        cp.up()
        wait_for("liveness again", lambda: liveness(health) == 200, timeout=60, operator=op)
    finally:
        op.stop()


# -- private local state -------------------------------------------------------------------


def test_local_provider_state_is_private(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = train(tmp_path / "model", progress=False)
    root = tmp_path / "local"
    root.mkdir()
    root.chmod(0o755)  # as an earlier release left it
    with caplog.at_level(logging.WARNING):
        provider = LocalProvider(root)
    assert f"tightened {root} from 755 to 700" in caplog.text
    spec = parse_spec(
        {
            "provider": "local",
            "modelPackageGroup": {"name": "g"},
            "model": {"artifact": f"file://{model.model_tar}"},
        }
    )
    provider.registry.ensure_group("g", None)
    version = provider.registry.register_version(spec)
    request = deploy_request(version, naming.endpoint_name("ns", "x", "staging"), config_name="c")
    provider.hosting.deploy(request)
    try:
        assert [p.name for p in root.rglob("*.log")]  # the server's log is there
        assert (root / "registry.db").is_file() and Path(version.artifact).is_file()
        assert mode(root) == 0o700
        assert open_to_others(root) == []
    finally:
        assert provider.hosting.delete(request.endpoint_name)
