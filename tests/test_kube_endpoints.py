"""The local provider's endpoints in a cluster: a Deployment and a Service per endpoint.

Everything runs against the session's real kube-apiserver (tests/kube.py), which validates and
stores the objects the backend renders. That control plane has no controller-manager and no
kubelet, so no ReplicaSet or pod ever appears on its own: where a test needs the Deployment
controller's verdict (a rollout complete, or past its progress deadline) it writes what that
controller would write into the Deployment's status subresource by hand, and where it needs a
kubelet's, it creates the pod object and its status itself, or runs the pod's containers' own
commands as local processes.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost
from emulator import free_port
from kube import kubectl
from kubernetes import config as k8s_config
from providers import deploy_request

from modeldeploy.cli import build_parser as cli_parser
from modeldeploy.providers.errors import TerminalError
from modeldeploy.providers.local import HOSTING_ENV, LocalProvider
from modeldeploy.providers.local import fetch as fetch_module
from modeldeploy.providers.local.hosting_kubernetes import FILE_REFUSED, KubernetesHosting
from modeldeploy.providers.local.hosting_process import ProcessHosting
from modeldeploy.providers.local.kube_render import Settings, k8s_name
from modeldeploy.providers.local.state import State
from modeldeploy.remote import DeployRequest
from modeldeploy.spec import SpecError, parse_spec

pytest_plugins = ["kube"]

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "registry.example/ml/modeldeploy:test"
RESOURCES = {
    "default": {"requests": {"cpu": "50m", "memory": "128Mi"}},
    "ml.m5.large": {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "2", "memory": "2Gi"},
    },
}
ENDPOINT = "demo-churn-1a2b3c4d-staging"
SELECTOR = f"modeldeploy.dev/endpoint={ENDPOINT}"


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def ns(kubeconfig: Path) -> str:
    name = f"md-ep-{secrets.token_hex(3)}"
    kubectl(kubeconfig, "create", "namespace", name)
    return name


@pytest.fixture
def state(tmp_path: Path) -> State:
    """Three versions as the local provider registers them: two from S3, one from a file."""
    reg = State(tmp_path / "registry.db")
    reg.ensure_group("churn", None)
    for n, source in enumerate(
        ["s3://models/churn/1/model.tar.gz", "s3://models/churn/2/model.tar.gz"],
        start=1,
    ):
        digest = hashlib.sha256(f"model {n}".encode()).hexdigest()
        reg.register(
            "churn",
            source=source,
            artifact=tmp_path / "artifacts" / digest / "model.tar.gz",
            digest=digest,
            framework_version="3.2-0",
            metrics={},
        )
    reg.register(
        "churn",
        source="file:///home/me/model.tar.gz",
        artifact=tmp_path / "artifacts" / ("f" * 64) / "model.tar.gz",
        digest="f" * 64,
        framework_version="3.2-0",
        metrics={},
    )
    return reg


def request(
    state: State, version: int, config: str, *, instance_type: str = "", count: int = 1
) -> DeployRequest:
    """What the executor asks for to put `version` of the test group on ENDPOINT."""
    target = next(v for v in state.versions("churn") if v.version == version)
    return deploy_request(
        target, ENDPOINT, config_name=config, instance_type=instance_type, count=count
    )


def digest(state: State, version: int) -> str:
    return next(v.artifact_digest for v in state.versions("churn") if v.version == version)


def make_backend(
    kubeconfig: Path, state: State, ns: str, *, supervise: bool = True, **settings: Any
) -> KubernetesHosting:
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    options = {"image": IMAGE, "resources": RESOURCES, "progress_deadline": 120, **settings}
    return KubernetesHosting(
        state, settings=Settings(namespace=ns, **options), api=api, supervise=supervise
    )


@pytest.fixture
def backend(kubeconfig: Path, state: State, ns: str) -> KubernetesHosting:
    return make_backend(kubeconfig, state, ns)


# --- helpers ----------------------------------------------------------------------------------


def get(kubeconfig: Path, ns: str, kind: str, name: str = ENDPOINT) -> dict[str, Any]:
    return json.loads(kubectl(kubeconfig, "get", kind, name, "-n", ns, "-o", "json").stdout)


def container(dep: dict[str, Any], name: str) -> dict[str, Any]:
    pod = dep["spec"]["template"]["spec"]
    return next(c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name)


def config_of(dep: dict[str, Any]) -> str:
    return dep["spec"]["template"]["metadata"]["annotations"]["modeldeploy.dev/config"]


def dockerfile_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    return int(users[-1])


# --- rendering --------------------------------------------------------------------------------


def test_endpoint_is_a_locked_down_deployment_and_a_service(
    kubeconfig: Path, ns: str, state: State, backend: KubernetesHosting
) -> None:
    config = f"{ENDPOINT}-c0123456789"
    backend.deploy(request(state, 1, config, instance_type="ml.m5.large", count=2))
    dep, svc = get(kubeconfig, ns, "deployment"), get(kubeconfig, ns, "service")

    # Labels and selection: the Service reaches exactly this endpoint's pods.
    labels = {"app.kubernetes.io/managed-by": "modeldeploy", "modeldeploy.dev/endpoint": ENDPOINT}
    assert labels.items() <= dep["metadata"]["labels"].items()
    assert dep["spec"]["selector"] == {"matchLabels": labels}
    assert svc["spec"]["selector"] == labels
    template = dep["spec"]["template"]
    assert labels.items() <= template["metadata"]["labels"].items()
    assert config_of(dep) == config
    assert dep["metadata"]["annotations"]["modeldeploy.dev/endpoint-name"] == ENDPOINT
    assert dep["spec"]["replicas"] == 2
    rolling = dep["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] == 1
    assert dep["spec"]["progressDeadlineSeconds"] == 120

    # The pod: the image's non-root user, no token, RuntimeDefault seccomp.
    pod = template["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_uid()
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert {v["name"]: "emptyDir" in v for v in pod["volumes"]} == {"models": True, "tmp": True}

    # The init container fetches this version's source and checks the registry's digest.
    fetch = container(dep, "fetch")
    assert fetch["command"][:3] == ["python", "-m", "modeldeploy.providers.local.fetch"]
    fetch_args = fetch_module.build_parser().parse_args(fetch["command"][3:])
    assert fetch_args.source == "s3://models/churn/1/model.tar.gz"
    assert fetch_args.sha256 == digest(state, 1)

    # The server serves what the init container wrote, on the port the Service targets.
    server = container(dep, "server")
    assert server["command"][:2] == ["modeldeploy", "serve"]
    serve_args = cli_parser().parse_args(server["command"][1:])
    assert Path(serve_args.model) == fetch_args.dest
    assert serve_args.host == "0.0.0.0"
    (port,) = server["ports"]
    assert port == {"name": "http", "containerPort": serve_args.port, "protocol": "TCP"}
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert svc["spec"]["ports"][0]["port"] == serve_args.port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/ping", "port": "http", "scheme": "HTTP"}

    # The model volume is written by the init container only.
    mounts = {
        c["name"]: {m["name"]: m.get("readOnly", False) for m in c["volumeMounts"]}
        for c in (fetch, server)
    }
    assert mounts == {
        "fetch": {"models": False, "tmp": False},
        "server": {"models": True, "tmp": False},
    }
    assert str(fetch_args.dest.parent) in {
        m["mountPath"] for m in fetch["volumeMounts"] if m["name"] == "models"
    }
    for c in (fetch, server):
        assert c["image"] == IMAGE
        assert c["resources"] == RESOURCES["ml.m5.large"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"

    endpoint = backend.describe(ENDPOINT)
    assert endpoint is not None and endpoint.status == "Creating"
    assert endpoint.config_name == config
    assert endpoint.url == f"http://{ENDPOINT}.{ns}.svc:8080/invocations"
    assert backend.names("demo-") == [ENDPOINT] and backend.names("other-") == []


def test_unknown_instance_types_get_the_default_resources(
    kubeconfig: Path, ns: str, state: State, backend: KubernetesHosting
) -> None:
    backend.deploy(request(state, 2, f"{ENDPOINT}-c1", instance_type="ml.c9.huge"))
    dep = get(kubeconfig, ns, "deployment")
    assert container(dep, "server")["resources"] == RESOURCES["default"]
    assert dep["spec"]["replicas"] == 1
    fetch_args = fetch_module.build_parser().parse_args(container(dep, "fetch")["command"][3:])
    assert fetch_args.source == "s3://models/churn/2/model.tar.gz"


def test_names_that_start_with_a_digit_become_dns_1035_service_names() -> None:
    assert k8s_name("Team-A-churn-1a2b3c4d-prod") == "team-a-churn-1a2b3c4d-prod"
    assert k8s_name("1team-churn-1a2b3c4d-prod") == "md-1team-churn-1a2b3c4d-prod"


def test_hosting_is_chosen_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(HOSTING_ENV, raising=False)
    assert isinstance(LocalProvider(root=tmp_path).hosting, ProcessHosting)
    monkeypatch.setenv(HOSTING_ENV, "pods")
    with pytest.raises(SpecError, match="expected one of process, kubernetes"):
        LocalProvider(root=tmp_path)
    monkeypatch.setenv(HOSTING_ENV, "kubernetes")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    with pytest.raises(SpecError, match="kubernetes hosting: no in-cluster config"):
        LocalProvider(root=tmp_path)


# --- the life cycle ---------------------------------------------------------------------------


def test_file_artifacts_are_refused_with_the_reason(
    kubeconfig: Path, ns: str, state: State, backend: KubernetesHosting
) -> None:
    with pytest.raises(TerminalError) as err:
        backend.deploy(request(state, 3, f"{ENDPOINT}-c1"))
    assert FILE_REFUSED in str(err.value)
    assert "needs s3:// artifacts" in str(err.value)
    assert "file:///home/me/model.tar.gz" in str(err.value)
    # Only s3:// is a source the spec admits: a URL in the registry is not offered to pods.
    url = state.register(
        "churn",
        source="https://models.example/churn/4/model.tar.gz",
        artifact=Path("/store/4/model.tar.gz"),
        digest="4" * 64,
        framework_version="3.2-0",
        metrics={},
    )
    with pytest.raises(TerminalError, match="needs s3:// artifacts"):
        backend.deploy(deploy_request(url, ENDPOINT, config_name=f"{ENDPOINT}-c1"))
    left = kubectl(kubeconfig, "get", "deployments,services", "-n", ns, "-o", "name").stdout
    assert left.strip() == ""


def test_objects_it_did_not_create_are_left_alone(
    kubeconfig: Path, ns: str, state: State, backend: KubernetesHosting
) -> None:
    kubectl(kubeconfig, "create", "service", "clusterip", ENDPOINT, "--tcp=80:80", "-n", ns)
    with pytest.raises(TerminalError, match="not managed by modeldeploy"):
        backend.deploy(request(state, 1, f"{ENDPOINT}-c1"))
    with pytest.raises(TerminalError, match="not managed by modeldeploy"):
        backend.delete(ENDPOINT)
    assert get(kubeconfig, ns, "service")["spec"]["ports"][0]["port"] == 80


def test_missing_namespace_is_named(kubeconfig: Path, state: State) -> None:
    backend = make_backend(kubeconfig, state, f"md-absent-{secrets.token_hex(3)}")
    with pytest.raises(TerminalError, match="does not exist"):
        backend.deploy(request(state, 1, f"{ENDPOINT}-c1"))


# --- the fetch init container -----------------------------------------------------------------


@pytest.fixture
def http_file(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    """A file served over HTTP on loopback: (url, bytes)."""
    body = os.urandom(300_000)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "model.tar.gz").write_bytes(body)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/model.tar.gz", body
    finally:
        server.shutdown()
        server.server_close()


def run_fetch(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    return subprocess.run(
        [sys.executable, "-m", "modeldeploy.providers.local.fetch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_fetch_writes_only_bytes_with_the_registered_digest(
    http_file: tuple[str, bytes], tmp_path: Path
) -> None:
    url, body = http_file
    dest = tmp_path / "models" / "model.tar.gz"
    good = hashlib.sha256(body).hexdigest()
    bad = hashlib.sha256(body + b"!").hexdigest()

    proc = run_fetch("--source", url, "--sha256", bad, "--dest", str(dest))
    assert proc.returncode == 1
    assert f"sha256 mismatch for {url}: expected {bad}, got {good}" in proc.stderr
    assert list(dest.parent.iterdir()) == []  # neither the file nor its partial download

    proc = run_fetch(
        "--source", url.replace("model", "absent"), "--sha256", good, "--dest", str(dest)
    )
    assert proc.returncode == 1 and "404" in proc.stderr
    assert list(dest.parent.iterdir()) == []

    proc = run_fetch("--source", "file:///etc/hostname", "--sha256", good, "--dest", str(dest))
    assert proc.returncode == 1 and "unsupported source scheme 'file'" in proc.stderr

    proc = run_fetch("--source", url, "--sha256", good, "--dest", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert dest.read_bytes() == body


# --- the pods' own commands, run as a kubelet would -------------------------------------------


def local_command(command: list[str], volumes: dict[str, Path]) -> list[str]:
    """A container's command, runnable here: this interpreter, volumes mapped to directories."""
    head = {"python": [sys.executable], "modeldeploy": [sys.executable, "-m", "modeldeploy"]}
    out = list(head[command[0]])
    for arg in command[1:]:
        for mount, local in volumes.items():
            if arg.startswith(mount + "/"):
                arg = str(local) + arg[len(mount) :]
                break
        out.append(arg)
    return out


def wait_ping(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            with opener.open(f"http://127.0.0.1:{port}/ping", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server never answered /ping")


@pytest.mark.emulator
def test_registered_s3_artifact_is_fetched_and_served_by_the_pod_commands(
    kubeconfig: Path,
    ns: str,
    model_artifact: str,
    model_tar_bytes: bytes,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole path of an in-cluster endpoint, with the kubelet's part done by hand: the
    provider registers an s3:// artifact and deploys it; the init container's and the server's
    commands, read back from the API server, run here against the same emulated S3."""
    port = free_port()
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv(HOSTING_ENV, "kubernetes")
    monkeypatch.setenv("MODELDEPLOY_ENDPOINT_NAMESPACE", ns)
    # The Service's DNS name does not resolve outside a cluster: the URL names the server below.
    monkeypatch.setenv("MODELDEPLOY_ENDPOINT_URL_TEMPLATE", f"http://127.0.0.1:{port}/invocations")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    provider = LocalProvider(root=tmp_path / "local")
    assert isinstance(provider.hosting, KubernetesHosting)
    spec = parse_spec(
        {
            "provider": "local",
            "modelPackageGroup": {"name": "churn"},
            "model": {"artifact": model_artifact},
        }
    )
    provider.registry.ensure_group("churn", None)
    version = provider.registry.register_version(spec)
    provider.hosting.deploy(
        deploy_request(version, ENDPOINT, instance_type="ml.m5.large", config_name=f"{ENDPOINT}-c1")
    )
    dep = get(kubeconfig, ns, "deployment")
    fetch, server = container(dep, "fetch"), container(dep, "server")
    # The operator's S3 endpoint reached the init container's environment.
    env = {e["name"]: e["value"] for e in fetch["env"]}
    assert env["AWS_ENDPOINT_URL"] == os.environ["AWS_ENDPOINT_URL"]

    volumes = {"/models": tmp_path / "models", "/tmp": tmp_path / "scratch"}
    for path in volumes.values():
        path.mkdir()
    fetched = subprocess.run(
        local_command(fetch["command"], volumes),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (volumes["/models"] / "model.tar.gz").read_bytes() == model_tar_bytes

    command = local_command(server["command"], volumes)
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ping(port, proc)
        assert provider.hosting.describe(ENDPOINT).status == "Creating"  # no kubelet here
        rows = np.random.default_rng(3).normal(size=(5, 4))
        payload = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
        # What the Service would route to: the server the pod's command started.
        url = provider.hosting.describe(ENDPOINT).url
        assert url == f"http://127.0.0.1:{port}/invocations"
        post = urllib.request.Request(
            url, data=payload.encode(), headers={"Content-Type": "text/csv"}, method="POST"
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(post, timeout=30) as resp:
            body = resp.read()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    booster = xgboost.Booster()
    with tarfile.open(fileobj=io.BytesIO(model_tar_bytes)) as tar:
        booster.load_model(bytearray(tar.extractfile("xgboost-model").read()))
    expected = booster.predict(xgboost.DMatrix(rows))
    got = np.array([float(x) for x in body.decode().split()])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert provider.hosting.delete(ENDPOINT) is True
