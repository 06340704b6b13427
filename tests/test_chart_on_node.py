"""The Helm chart installed for real on a real node: the operator pod runs the built image under
the chart's ServiceAccount and RBAC, and drives a ModelDeployment of the local provider with
kubernetes hosting end to end. Its staging and production endpoints are `modeldeploy serve`
pods (the operator image) that answer real XGBoost predictions through their Services; the
registry lives on a real volume (a hostPath PersistentVolume on the node) and survives the
operator pod being deleted mid-pipeline, with no duplicate version or endpoint. Faults on the
node: an endpoint pod lost (and kept from coming back by a cordon) shows in the status until
its ReplicaSet's replacement serves; an endpoint whose pods cannot start (an image the node
lacks) fails with the kubelet's reason in the status.

The AWS emulator holds the artifacts (the local provider in a cluster fetches s3:// only) and
listens on the node's address, which pods reach through their gateway.
Runs as root with containerd (`make test`); skips with the reason elsewhere.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from deploy_artifacts import CHART, Helm, ok
from emulator import REGION, Emulator
from kube import kubectl
from node import AWS_KEYS, CREDENTIALS, IMAGE, NodeCluster, local_prediction, post_row
from operator_process import get, phase_is, wait_for

from modeldeploy.cluster.pki import NODE_IP
from modeldeploy.training.train import train

pytestmark = pytest.mark.node
pytest_plugins = ["kube", "node", "deploy_artifacts"]

NS = "modeldeploy-system"
APPS = "models"
RELEASE = "md"
BUCKET = "node-artifacts"
NAME = "breast-cancer"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """The AWS emulator on the node's address, so pods reach it."""
    emulator = Emulator.start(host=NODE_IP)
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory):
    return train(tmp_path_factory.mktemp("seed"), progress=False)


@pytest.fixture(scope="module")
def state_volume(node_cluster: NodeCluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hostPath PersistentVolume on the node for the local provider's state, owned by the
    image's user as a provisioner would leave it."""
    path = tmp_path_factory.mktemp("local-state-volume")
    path.chmod(0o755)
    for parent in (path, *list(path.parents)[:3]):
        parent.chmod(parent.stat().st_mode | 0o011)  # traversable by the pod's user
    os.chown(path, 65532, 65532)
    pv = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "modeldeploy-state"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "node-local",
            "persistentVolumeReclaimPolicy": "Retain",
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }
    kubectl(node_cluster.kubeconfig, "apply", "-f", "-", input=json.dumps(pv))
    return path


@pytest.fixture(scope="module")
def installed(
    node_cluster: NodeCluster, helm: Helm, emulator: Emulator, state_volume: Path
) -> Iterator[dict]:
    """`helm install` of the chart with the built image; the operator pod Ready."""
    kc = node_cluster.kubeconfig
    for ns in (NS, APPS):
        kubectl(kc, "create", "namespace", ns)
    aws = [{"name": k, "value": v} for k, v in CREDENTIALS.items()]
    aws.append({"name": "AWS_ENDPOINT_URL", "value": emulator.url})
    repository, tag = IMAGE.rsplit(":", 1)
    values = {
        "provider": "local",
        "region": REGION,
        "pollSeconds": 2,
        # A lost endpoint pod is noticed at the next resync (the faults below wait for it).
        "resyncSeconds": 3,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "extraEnv": aws,
        "local": {
            "hosting": "kubernetes",
            "endpointNamespace": APPS,
            "endpointEnv": aws[:2],
            "persistence": {"enabled": True, "storageClassName": "node-local"},
            # A pod that cannot start fails its endpoint after this long.
            "progressDeadlineSeconds": 30,
        },
    }
    values_path = state_volume.parent / "values.yaml"
    values_path.write_text(yaml.safe_dump(values))
    t = time.monotonic()
    ok(
        helm(
            "install",
            RELEASE,
            CHART,
            "--namespace",
            NS,
            "--values",
            values_path,
            "--kubeconfig",
            kc,
            "--wait",
            "--timeout",
            "180s",
        )
    )
    kubectl(
        kc,
        "-n",
        NS,
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        "app.kubernetes.io/name=modeldeploy",
        "--timeout=120s",
    )
    print(f"helm install -> operator pod Ready: {time.monotonic() - t:.1f}s")
    yield values
    kubectl(kc, "-n", APPS, "delete", "mdep", "--all", "--timeout=90s", check=False)
    helm("uninstall", RELEASE, "--namespace", NS, "--kubeconfig", kc, "--wait")


def operator_pod(kc: Path) -> dict:
    pods = kubectl(
        kc, "-n", NS, "get", "pods", "-l", "app.kubernetes.io/name=modeldeploy", "-o", "json"
    ).stdout
    items = [p for p in json.loads(pods)["items"] if not p["metadata"].get("deletionTimestamp")]
    assert len(items) == 1, [p["metadata"]["name"] for p in items]
    return items[0]


def test_the_operator_pod_runs_under_the_charts_identity(
    node_cluster: NodeCluster, installed: dict
) -> None:
    pod = operator_pod(node_cluster.kubeconfig)
    spec, status = pod["spec"], pod["status"]
    assert spec["serviceAccountName"] == f"{RELEASE}-modeldeploy"
    assert spec["containers"][0]["image"] == IMAGE
    assert spec["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # The kubelet probes it: the same endpoint answers from the node.
    with _OPENER.open(f"http://{status['podIP']}:8081/healthz", timeout=5) as r:
        assert r.status == 200
    # What the ServiceAccount may do is the chart's ClusterRole, not more.
    sa = f"system:serviceaccount:{NS}:{RELEASE}-modeldeploy"
    can = lambda *a: kubectl(  # noqa: E731
        node_cluster.kubeconfig, "auth", "can-i", *a, f"--as={sa}", check=False
    ).stdout.strip()
    assert can("patch", "modeldeployments.mlops.modeldeploy.dev/status", "-n", APPS) == "yes"
    assert can("get", "secrets", "-n", "kube-system") == "no"


def endpoint_pods(kc: Path) -> list[dict]:
    out = kubectl(kc, "-n", APPS, "get", "pods", "-o", "json").stdout
    return json.loads(out)["items"]


def test_a_model_reaches_production_in_pods_and_survives_an_operator_restart(
    node_cluster: NodeCluster, installed: dict, emulator: Emulator, seed, state_volume: Path
) -> None:
    kc = node_cluster.kubeconfig
    s3 = boto3.client("s3", endpoint_url=emulator.url, region_name=REGION, **AWS_KEYS)
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(seed.model_tar), BUCKET, "seed/model.tar.gz")
    s3.upload_file(str(seed.evaluation), BUCKET, "seed/evaluation.json")
    doc = yaml.safe_load((CHART.parents[1] / "manifests/examples/local.yaml").read_text())
    doc["metadata"]["name"] = NAME
    doc["spec"]["modelPackageGroup"]["name"] = NAME
    doc["spec"]["model"]["artifact"] = f"s3://{BUCKET}/seed/model.tar.gz"
    doc["spec"]["model"]["metrics"] = f"s3://{BUCKET}/seed/evaluation.json"
    row = doc["spec"]["staging"]["smokeTest"]["payload"]

    t = time.monotonic()
    kubectl(kc, "-n", APPS, "apply", "-f", "-", input=yaml.safe_dump(doc))
    # Mid-pipeline (staging is being deployed), the operator pod is deleted: its Deployment
    # replaces it, and the new pod finds the registry on the volume.
    wait_for(
        "staging deploying",
        lambda: (get(kc, APPS, NAME).get("status") or {}).get("staging"),
        timeout=120,
    )
    first = operator_pod(kc)["metadata"]["name"]
    kubectl(kc, "-n", NS, "delete", "pod", first, "--wait=false")
    status = wait_for(
        "awaiting promotion", phase_is(kc, APPS, NAME, "AwaitingPromotion", staging=1), timeout=240
    )
    assert operator_pod(kc)["metadata"]["name"] != first
    print(
        f"apply -> AwaitingPromotion (operator pod replaced on the way): "
        f"{time.monotonic() - t:.1f}s"
    )

    body = json.dumps({"spec": {"production": {"promotedVersion": 1}}})
    kubectl(kc, "-n", APPS, "patch", "mdep", NAME, "--type", "merge", "-p", body)
    status = wait_for(
        "deployed", phase_is(kc, APPS, NAME, "Deployed", staging=1, production=1), timeout=240
    )
    print(f"apply -> Deployed, both endpoints in pods: {time.monotonic() - t:.1f}s")

    # One version, two endpoints, each a Ready pod of the operator image answering through
    # its Service with the model's own prediction.
    assert [v["version"] for v in status["versions"]] == [1]
    pods = endpoint_pods(kc)
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"] == IMAGE
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
        assert ready == "True"
    expected = local_prediction(seed.model_tar, row)
    for stage in ("staging", "production"):
        name = status[stage]["endpointName"]
        svc = json.loads(kubectl(kc, "-n", APPS, "get", "svc", name.lower(), "-o", "json").stdout)
        url = f"http://{svc['spec']['clusterIP']}:8080/invocations"
        assert post_row(url, row) == pytest.approx(expected, rel=1e-6)
        assert status[stage]["url"].startswith(f"http://{name.lower()}.{APPS}.svc:8080")
    # The registry is on the volume, not in the pod.
    assert any(state_volume.rglob("*.db")) or any(state_volume.iterdir())


def test_the_operator_pod_drives_the_sagemaker_provider_against_the_emulator(
    node_cluster: NodeCluster, installed: dict, emulator: Emulator, seed
) -> None:
    """The same pod, a ModelDeployment of `provider: sagemaker`: every AWS call leaves the pod
    for the emulator on the node's address (AWS_ENDPOINT_URL from the chart's extraEnv)."""
    kc = node_cluster.kubeconfig
    doc = yaml.safe_load((CHART.parents[1] / "manifests/examples/automatic.yaml").read_text())
    bucket, key = doc["spec"]["model"]["artifact"][5:].split("/", 1)
    _, metrics_key = doc["spec"]["model"]["metrics"][5:].split("/", 1)
    s3 = boto3.client("s3", endpoint_url=emulator.url, region_name=REGION, **AWS_KEYS)
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(seed.model_tar), bucket, key)
    s3.upload_file(str(seed.evaluation), bucket, metrics_key)
    # The emulator's endpoints answer InvokeEndpoint with what it is told (no container runs).
    emulator.set_invoke_results([{"Body": "0.0125\n", "ContentType": "text/csv"}])
    t = time.monotonic()
    kubectl(kc, "-n", APPS, "apply", "-f", "-", input=yaml.safe_dump(doc))
    name = doc["metadata"]["name"]
    status = wait_for("Deployed", phase_is(kc, APPS, name, "Deployed", production=1), timeout=180)
    print(f"sagemaker provider from the pod: apply -> Deployed {time.monotonic() - t:.1f}s")
    sm = boto3.client("sagemaker", endpoint_url=emulator.url, region_name=REGION, **AWS_KEYS)
    names = sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"])
    assert names == sorted(
        [status["staging"]["endpointName"], status["production"]["endpointName"]]
    )
    kubectl(kc, "-n", APPS, "delete", "mdep", name, "--timeout=90s")
    assert sm.list_endpoints()["Endpoints"] == []


def stage_status(kc: Path, name: str, stage: str) -> dict:
    return (get(kc, APPS, name).get("status") or {}).get(stage) or {}


def test_a_lost_endpoint_pod_shows_in_the_status_until_it_is_replaced(
    node_cluster: NodeCluster, installed: dict, seed
) -> None:
    kc = node_cluster.kubeconfig
    name = stage_status(kc, NAME, "staging")["endpointName"]
    label = f"modeldeploy.dev/endpoint={name.lower()}"
    (pod,) = json.loads(kubectl(kc, "-n", APPS, "get", "pods", "-l", label, "-o", "json").stdout)[
        "items"
    ]
    # The cordon keeps the replacement Pending, so the window is not a race with the resync.
    kubectl(kc, "cordon", "modeldeploy-node")
    try:
        kubectl(kc, "-n", APPS, "delete", "pod", pod["metadata"]["name"], "--grace-period=1")
        down = wait_for(
            "the loss in the status",
            lambda: (
                (st := stage_status(kc, NAME, "staging")).get("endpointStatus") == "SystemUpdating"
                and st
            ),
            timeout=60,
        )
        assert "no ready pod" in down["failureReason"]
        assert "not scheduled" in down["failureReason"]  # the scheduler's words, verbatim
    finally:
        kubectl(kc, "uncordon", "modeldeploy-node")
    back = wait_for(
        "the replacement serving",
        lambda: (
            (st := stage_status(kc, NAME, "staging")).get("endpointStatus") == "InService" and st
        ),
        timeout=90,
    )
    assert back["version"] == 1
    status = get(kc, APPS, NAME)["status"]
    assert status["phase"] == "Deployed" and [v["version"] for v in status["versions"]] == [1]
    assert len(endpoint_pods(kc)) == 2


def test_an_endpoint_whose_pods_cannot_start_fails_with_the_kubelets_reason(
    node_cluster: NodeCluster, installed: dict, seed, helm: Helm, tmp_path: Path
) -> None:
    kc = node_cluster.kubeconfig
    values = dict(installed)
    values["local"] = dict(values["local"], serveImage="localhost/modeldeploy:missing")
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    ok(
        helm(
            "upgrade",
            RELEASE,
            CHART,
            "--namespace",
            NS,
            "--values",
            path,
            "--kubeconfig",
            kc,
            "--wait",
            "--timeout",
            "180s",
        )
    )
    doc = yaml.safe_load((CHART.parents[1] / "manifests/examples/local.yaml").read_text())
    doc["metadata"]["name"] = doc["spec"]["modelPackageGroup"]["name"] = "no-image"
    doc["spec"]["model"]["artifact"] = f"s3://{BUCKET}/seed/model.tar.gz"
    doc["spec"]["model"]["metrics"] = f"s3://{BUCKET}/seed/evaluation.json"
    kubectl(kc, "-n", APPS, "apply", "-f", "-", input=yaml.safe_dump(doc))
    failed = wait_for(
        "staging failed",
        lambda: (
            (st := stage_status(kc, "no-image", "staging")).get("endpointStatus") == "Failed" and st
        ),
        timeout=120,
    )
    assert "ErrImageNeverPull" in failed["failureReason"], failed
    status = get(kc, APPS, "no-image")["status"]
    assert "ErrImageNeverPull" in json.dumps(status["conditions"]), status["conditions"]
    kubectl(kc, "-n", APPS, "delete", "mdep", "no-image", "--timeout=90s")
