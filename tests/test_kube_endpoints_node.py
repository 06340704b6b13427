"""The local provider's kubernetes hosting on a real node: rollouts judged by the real
Deployment controller and kubelet, not by statuses written by hand.

Each endpoint is a Deployment whose pods fetch a registered s3:// artifact from the AWS emulator
(on the node's address), check its sha256 and serve it. A version whose stored bytes do not
match its registered digest is the pod that cannot start: its fetch init container exits 1 and
crash-loops until the Deployment passes its progress deadline (15 s here). The backend reports
SageMaker's statuses from that: Creating, InService, Updating, an update rolled back with the
failed config and the kubelet's reason, a new endpoint Failed, SystemUpdating while a serving
endpoint has lost its pods. Runs as root with containerd (`make test`); skips elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from conftest import build_model_tar
from emulator import REGION, Emulator
from kube import kubectl
from node import AWS_KEYS, CREDENTIALS, IMAGE, NodeCluster, local_prediction, post_row
from providers import deploy_request

from modeldeploy.cluster.pki import NODE_IP
from modeldeploy.providers.errors import ProviderError, TransientError
from modeldeploy.providers.local.hosting_kubernetes import KubernetesHosting
from modeldeploy.providers.local.kube_render import Settings
from modeldeploy.providers.local.state import State
from modeldeploy.remote import Endpoint

pytestmark = pytest.mark.node
pytest_plugins = ["kube", "node"]

BUCKET = "endpoints"
ENDPOINT = "demo-churn-1a2b3c4d-staging"
DEADLINE = 15


@pytest.fixture(scope="module")
def artifacts(node_cluster: NodeCluster, tmp_path_factory) -> Iterator[dict[int, Any]]:
    """The emulator on the node's address holding versions 1 and 2 (real models) and version
    3, whose bytes are not the ones its digest names."""
    emulator = Emulator.start(host=NODE_IP)
    s3 = boto3.client("s3", endpoint_url=emulator.url, region_name=REGION, **AWS_KEYS)
    s3.create_bucket(Bucket=BUCKET)
    out: dict[int, Any] = {"url": emulator.url}
    for version, rounds in ((1, 3), (2, 5)):
        body = build_model_tar(rounds=rounds, seed=version)
        s3.put_object(Bucket=BUCKET, Key=f"{version}/model.tar.gz", Body=body)
        path = tmp_path_factory.mktemp(f"v{version}") / "model.tar.gz"
        path.write_bytes(body)
        out[version] = (hashlib.sha256(body).hexdigest(), path)
    s3.put_object(Bucket=BUCKET, Key="3/model.tar.gz", Body=b"not the registered bytes")
    out[3] = (hashlib.sha256(b"what was registered").hexdigest(), None)
    yield out
    emulator.stop()


@pytest.fixture
def state(tmp_path: Path, artifacts: dict[int, Any]) -> State:
    reg = State(tmp_path / "registry.db")
    reg.ensure_group("churn", None)
    for version in (1, 2, 3):
        digest, _ = artifacts[version]
        reg.register(
            "churn",
            source=f"s3://{BUCKET}/{version}/model.tar.gz",
            artifact=tmp_path / "artifacts" / digest / "model.tar.gz",
            digest=digest,
            framework_version="3.2-0",
            metrics={},
        )
    return reg


@pytest.fixture
def ns(node_cluster: NodeCluster) -> Iterator[str]:
    name = f"md-node-ep-{secrets.token_hex(3)}"
    kubectl(node_cluster.kubeconfig, "create", "namespace", name)
    yield name
    kubectl(node_cluster.kubeconfig, "delete", "namespace", name, "--wait=false")


def make_backend(
    node_cluster: NodeCluster,
    state: State,
    ns: str,
    artifacts: dict[int, Any],
    *,
    supervise: bool = True,
) -> KubernetesHosting:
    from kubernetes import config as k8s_config

    api = k8s_config.new_client_from_config(config_file=str(node_cluster.kubeconfig))
    env = [{"name": k, "value": v} for k, v in CREDENTIALS.items()]
    env += [{"name": "AWS_ENDPOINT_URL", "value": artifacts["url"]}]
    settings = Settings(
        namespace=ns,
        image=IMAGE,
        pull_policy="Never",
        resources={"default": {"requests": {"cpu": "50m", "memory": "128Mi"}}},
        extra_env=env,
        progress_deadline=DEADLINE,
    )
    return KubernetesHosting(state, settings=settings, api=api, supervise=supervise)


@pytest.fixture
def backend(
    node_cluster: NodeCluster, state: State, ns: str, artifacts: dict[int, Any]
) -> KubernetesHosting:
    return make_backend(node_cluster, state, ns, artifacts)


def request(state: State, version: int, config: str, count: int = 1):
    target = next(v for v in state.versions("churn") if v.version == version)
    return deploy_request(target, ENDPOINT, config_name=config, instance_type="", count=count)


def until(
    backend: KubernetesHosting, check: Callable[[Endpoint], bool], timeout: float = 90
) -> Endpoint:
    """describe() (a supervising look, as the operator's) until `check` holds."""
    deadline = time.monotonic() + timeout
    while True:
        endpoint = backend.describe(ENDPOINT)
        if endpoint is not None and check(endpoint):
            return endpoint
        assert time.monotonic() < deadline, f"still {endpoint}"
        time.sleep(0.5)


def config_of(dep: dict[str, Any]) -> str:
    return dep["spec"]["template"]["metadata"]["annotations"]["modeldeploy.dev/config"]


def deployment(node_cluster: NodeCluster, ns: str) -> dict[str, Any]:
    out = kubectl(node_cluster.kubeconfig, "-n", ns, "get", "deployment", ENDPOINT, "-o", "json")
    return json.loads(out.stdout)


def predict(node_cluster: NodeCluster, ns: str, row: str) -> float:
    ip = kubectl(
        node_cluster.kubeconfig,
        "-n",
        ns,
        "get",
        "svc",
        ENDPOINT,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ).stdout
    return post_row(f"http://{ip}:8080/invocations", row)


ROW = ",".join(repr(float(x)) for x in np.random.default_rng(5).normal(size=4))


def test_rollouts_report_sagemaker_statuses(
    node_cluster: NodeCluster, ns: str, state: State, backend: KubernetesHosting, artifacts
) -> None:
    first, second = f"{ENDPOINT}-c1", f"{ENDPOINT}-c2"
    backend.deploy(request(state, 1, first))
    assert backend.describe(ENDPOINT).status == "Creating"
    endpoint = until(backend, lambda e: e.status != "Creating")
    assert (endpoint.status, endpoint.config_name, endpoint.failure_reason) == (
        "InService",
        first,
        "",
    )
    assert predict(node_cluster, ns, ROW) == pytest.approx(local_prediction(artifacts[1][1], ROW))

    # The same config again changes nothing (no new generation, no new rollout).
    generation = deployment(node_cluster, ns)["metadata"]["generation"]
    backend.deploy(request(state, 1, first))
    assert deployment(node_cluster, ns)["metadata"]["generation"] == generation

    # An update: the new pods roll while the old ones serve (Updating), as the kubelet says.
    backend.deploy(request(state, 2, second))
    endpoint = backend.describe(ENDPOINT)
    assert (endpoint.status, endpoint.config_name) == ("Updating", first)
    with pytest.raises(TransientError, match="Updating"):
        backend.deploy(request(state, 1, f"{ENDPOINT}-c3"))
    endpoint = until(backend, lambda e: e.status != "Updating")
    assert (endpoint.status, endpoint.config_name, endpoint.failure_reason) == (
        "InService",
        second,
        "",
    )
    assert "modeldeploy.dev/previous" not in deployment(node_cluster, ns)["metadata"]["annotations"]
    assert predict(node_cluster, ns, ROW) == pytest.approx(local_prediction(artifacts[2][1], ROW))


def test_update_past_its_deadline_rolls_back_and_names_the_failed_config(
    node_cluster: NodeCluster, ns: str, state: State, backend: KubernetesHosting, artifacts
) -> None:
    first, second = f"{ENDPOINT}-c1", f"{ENDPOINT}-c2"
    backend.deploy(request(state, 1, first))
    until(backend, lambda e: e.status == "InService")
    serving = deployment(node_cluster, ns)["spec"]["template"]

    backend.deploy(request(state, 3, second))  # its pods' fetch fails the digest check
    endpoint = until(backend, lambda e: e.status != "Updating", timeout=DEADLINE + 60)
    assert (endpoint.status, endpoint.config_name) == ("InService", first)
    assert endpoint.failure_reason.startswith(f"update to {second} failed: ")
    assert "progress" in endpoint.failure_reason  # the controller's ProgressDeadlineExceeded
    assert "fetch exited 1" in endpoint.failure_reason and "sha256" in endpoint.failure_reason
    # The previous template is back, byte for byte; its pods never stopped serving.
    dep = deployment(node_cluster, ns)
    assert dep["spec"]["template"] == serving
    assert "modeldeploy.dev/previous" not in dep["metadata"]["annotations"]
    assert predict(node_cluster, ns, ROW) == pytest.approx(local_prediction(artifacts[1][1], ROW))

    # The reason lives in the Deployment: an operator restarted now reports the same.
    restarted = make_backend(node_cluster, state, ns, artifacts)
    assert restarted.describe(ENDPOINT) == endpoint

    # A new update starts clean, and its success clears the old failure.
    third = f"{ENDPOINT}-c3"
    restarted.deploy(request(state, 2, third, count=2))
    assert restarted.describe(ENDPOINT).failure_reason == ""
    endpoint = until(restarted, lambda e: e.status == "InService")
    assert (endpoint.config_name, endpoint.failure_reason) == (third, "")


def test_new_endpoint_past_its_deadline_fails_and_can_be_deleted(
    node_cluster: NodeCluster, ns: str, state: State, backend: KubernetesHosting
) -> None:
    config = f"{ENDPOINT}-c1"
    backend.deploy(request(state, 3, config))
    endpoint = until(backend, lambda e: e.status != "Creating", timeout=DEADLINE + 60)
    assert endpoint.status == "Failed"
    assert "fetch exited 1" in endpoint.failure_reason and "sha256" in endpoint.failure_reason
    with pytest.raises(ProviderError, match="delete it first") as err:
        backend.deploy(request(state, 2, f"{ENDPOINT}-c2"))
    assert not isinstance(err.value, TransientError)
    assert backend.delete(ENDPOINT) is True
    assert backend.describe(ENDPOINT) is None
    left = kubectl(node_cluster.kubeconfig, "get", "deployments,services", "-n", ns, "-o", "name")
    assert left.stdout.strip() == ""


def test_lost_pods_of_a_serving_endpoint_show_as_system_updating(
    node_cluster: NodeCluster, ns: str, state: State, backend: KubernetesHosting
) -> None:
    kc = node_cluster.kubeconfig
    backend.deploy(request(state, 1, f"{ENDPOINT}-c1"))
    until(backend, lambda e: e.status == "InService")
    # The cordon keeps the replacement Pending: the pod is gone until it is lifted.
    kubectl(kc, "cordon", "modeldeploy-node")
    try:
        label = f"modeldeploy.dev/endpoint={ENDPOINT}"
        kubectl(kc, "-n", ns, "delete", "pod", "-l", label, "--grace-period=1")
        endpoint = until(backend, lambda e: e.status != "InService")
        assert endpoint.status == "SystemUpdating"
        assert endpoint.failure_reason.startswith("no ready pod")
        assert "not scheduled" in endpoint.failure_reason
    finally:
        kubectl(kc, "uncordon", "modeldeploy-node")
    endpoint = until(backend, lambda e: e.status == "InService")
    assert endpoint.failure_reason == ""


def test_a_read_only_check_reports_the_next_state_and_writes_nothing(
    node_cluster: NodeCluster, ns: str, state: State, backend: KubernetesHosting, artifacts
) -> None:
    first, second = f"{ENDPOINT}-c1", f"{ENDPOINT}-c2"
    viewer = make_backend(node_cluster, state, ns, artifacts, supervise=False)
    backend.deploy(request(state, 1, first))
    # A finished rollout: reported InService; only a supervising look records it.
    endpoint = until(viewer, lambda e: e.status == "InService")
    assert (endpoint.config_name, endpoint.failure_reason) == (first, "")
    annotations = deployment(node_cluster, ns)["metadata"]["annotations"]
    assert "modeldeploy.dev/in-service-config" not in annotations
    assert backend.describe(ENDPOINT) == endpoint
    annotations = deployment(node_cluster, ns)["metadata"]["annotations"]
    assert annotations["modeldeploy.dev/in-service-config"] == first

    # An update past its deadline: reported rolled back, but the Deployment keeps the new
    # template until a supervising look puts the old one back.
    backend.deploy(request(state, 3, second))
    endpoint = until(viewer, lambda e: e.status != "Updating", timeout=DEADLINE + 60)
    assert (endpoint.status, endpoint.config_name) == ("InService", first)
    assert endpoint.failure_reason.startswith(f"update to {second} failed: ")
    assert config_of(deployment(node_cluster, ns)) == second
    assert backend.describe(ENDPOINT) == endpoint
    assert config_of(deployment(node_cluster, ns)) == first
    for refused in (
        lambda: viewer.deploy(request(state, 1, f"{ENDPOINT}-c3")),
        lambda: viewer.delete(ENDPOINT),
    ):
        with pytest.raises(ProviderError, match="read-only"):
            refused()
