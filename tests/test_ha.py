"""High availability on a real API server: two `modeldeploy run` replicas in kopf's peering, run
with exactly the chart's HA arguments, RBAC and peering object (a user bound to the rendered
ClusterRole). The older replica acts, the younger makes no AWS call; the active one is killed
with SIGKILL in the middle of the pipelines; the standby's first AWS call comes within 15 s
(plus a margin for a loaded machine), no group, version or endpoint is created twice (models
and endpoint configs may be created again under the same name, as after any restart), and
everything ends Deployed and Ready.

Each replica reaches the AWS emulator through its own recording proxy, so every call is known
by who made it and when. A control plane and an emulator of its own: the session's may have
test_e2e's standalone operator on it, which would act on these resources too.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import build_model_tar
from deploy_artifacts import Helm, documents, one, operator_container, render_chart
from emulator import REGION, ROLE_ARN, Emulator
from faultproxy import SMOKE_ANSWER, FaultProxy, batch_spec, is_ready, operation
from kube import CRD_FILE, CRD_NAME, kubectl, kubectl_path, running_control_plane
from operator_process import OperatorProcess, wait_for

from modeldeploy.cluster import ControlPlane, wait_established

pytest_plugins = ["deploy_artifacts"]

ROOT = Path(__file__).resolve().parents[1]
PEERING_CRD = ROOT / "crds" / "kopf-peering.yaml"
NAMESPACE = "ha"
BUCKET = "modeldeploy-ha"
USER = "modeldeploy-ha"
N = 6
TAKEOVER = 15.0  # the bound, from the kill to the standby's first AWS call
MARGIN = 3.0  # a loaded 2-core machine
# Calls that create a remote object, and the request field naming what they create.
CREATES = {
    "CreateModelPackageGroup": "ModelPackageGroupName",
    "CreateModelPackage": "ModelPackageGroupName",  # one version per group in this batch
    "CreateModel": "ModelName",
    "CreateEndpointConfig": "EndpointConfigName",
    "CreateEndpoint": "EndpointName",
}
READS = ("Describe", "List", "Get", "S3 GET", "S3 HEAD")


class RecordingProxy(FaultProxy):
    """tests/faultproxy.py without faults, noting each request: when, what, and its body."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, rate=0.0)
        self.calls: list[tuple[float, str, dict]] = []

    def forward(self, command, path, headers, body):  # type: ignore[no-untyped-def]
        target = next((v for k, v in headers if k.lower() == "x-amz-target"), None)
        op = operation(command, path, target)
        try:
            fields = json.loads(body) if target and body else {}
        except ValueError:
            fields = {}
        with self._lock:
            self.calls.append((time.monotonic(), op, fields))
        return super().forward(command, path, headers, body)

    def snapshot(self) -> list[tuple[float, str, dict]]:
        with self._lock:
            return list(self.calls)


def mutating(calls: list[tuple[float, str, dict]]) -> list[tuple[float, str, dict]]:
    return [c for c in calls if not c[1].startswith(READS) and c[1] != "InvokeEndpoint"]


@pytest.fixture(scope="module")
def ha_control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    yield from running_control_plane(tmp_path_factory, "ha-controlplane")


@pytest.fixture(scope="module")
def chart_ha(helm: Helm) -> list[dict]:
    return documents(
        render_chart(helm, "--set", "highAvailability.enabled=true", "--set", "logLevel=debug")
    )


@pytest.fixture(scope="module")
def ha_kubeconfig(ha_control_plane: ControlPlane, chart_ha: list[dict]) -> Path:
    """A user bound to the chart's HA ClusterRole, its CRDs and peering object applied."""
    admin = ha_control_plane.kubeconfig_path
    for crd in (CRD_FILE, PEERING_CRD):
        kubectl(admin, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
    for name in (CRD_NAME, "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"):
        wait_established(kubectl_path(), admin, name)
    role, peering = one(chart_ha, "ClusterRole"), one(chart_ha, "ClusterKopfPeering")
    kubectl(
        admin,
        "apply",
        "-f",
        "-",
        input=json.dumps({"kind": "List", "apiVersion": "v1", "items": [role, peering]}),
    )
    kubectl(
        admin,
        "create",
        "clusterrolebinding",
        USER,
        f"--clusterrole={role['metadata']['name']}",
        f"--user={USER}",
    )
    kubectl(admin, "create", "namespace", NAMESPACE)
    return ha_control_plane.user_kubeconfig(USER)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    emu = Emulator.start()
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=emu.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=BUCKET)
        model = build_model_tar()
        for i in range(N):
            s3.put_object(Bucket=BUCKET, Key=f"ha/{i}/model.tar.gz", Body=model)
        emu.set_invoke_results([SMOKE_ANSWER])
        yield emu
    finally:
        emu.stop()


def peers(admin: Path, name: str) -> dict:
    out = kubectl(admin, "get", "clusterkopfpeering", name, "-o", "json").stdout
    return json.loads(out).get("status") or {}


def statuses(admin: Path) -> dict[str, dict]:
    out = kubectl(admin, "-n", NAMESPACE, "get", "mdep", "-o", "json").stdout
    return {o["metadata"]["name"]: o.get("status") or {} for o in json.loads(out)["items"]}


def test_standby_takes_over_within_15s_without_duplicates(
    ha_control_plane: ControlPlane,
    ha_kubeconfig: Path,
    chart_ha: list[dict],
    emulator: Emulator,
    tmp_path: Path,
) -> None:
    admin = ha_control_plane.kubeconfig_path
    container = operator_container(one(chart_ha, "Deployment"))
    ha_args = tuple(a for a in container["args"] if a.startswith("--peering"))
    peering_name = next(a.split("=", 1)[1] for a in ha_args if a.startswith("--peering="))
    assert "--peering-lifetime=10" in ha_args

    proxies = {name: RecordingProxy(emulator.url).start() for name in ("a", "b")}
    ops: dict[str, OperatorProcess] = {}
    try:
        for name in ("a", "b"):
            env = {
                "POD_ID": f"replica-{name}",  # as the chart sets it: kopf's identity
                "AWS_ENDPOINT_URL": proxies[name].url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "MODELDEPLOY_DEFAULT_PROVIDER": "sagemaker",
                "MODELDEPLOY_LOCAL_DIR": str(tmp_path / f"local-{name}"),
            }
            ops[name] = OperatorProcess(ha_kubeconfig, env, ("--log-level", "debug", *ha_args))
            ops[name].start()
            # One after the other: a is the older replica, so the active one.
            wait_for(
                f"replica-{name} in the peering object",
                lambda n=name: f"replica-{n}" in peers(admin, peering_name),
                timeout=60,
                operator=ops[name],
            )
        a, b = ops["a"], ops["b"]

        for i in range(N):
            spec = batch_spec(i, f"s3://{BUCKET}/ha/{i}/model.tar.gz", ROLE_ARN, REGION)
            doc = {
                "apiVersion": "mlops.modeldeploy.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": f"ha-{i}", "namespace": NAMESPACE},
                "spec": spec,
            }
            kubectl(admin, "apply", "-f", "-", input=json.dumps(doc))

        # Mid-pipeline: the active one has created endpoints, and not everything is Ready yet.
        wait_for(
            "the active replica's first CreateEndpoint",
            lambda: any(op == "CreateEndpoint" for _, op, _ in proxies["a"].snapshot()),
            timeout=120,
            operator=a,
            interval=0.05,
        )
        assert a.proc is not None
        a.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.proc.wait(timeout=10)
        ready_at_kill = sum(is_ready(s) for s in statuses(admin).values())
        assert ready_at_kill < N, "the kill came after the pipelines: nothing was handed over"
        assert proxies["b"].snapshot() == [], "the standby called AWS while the active one ran"
        by_a = len(proxies["a"].snapshot())

        first_b = wait_for(
            "the standby's first AWS call",
            lambda: (proxies["b"].snapshot() or [None])[0],
            timeout=TAKEOVER + 30,
            operator=b,
            interval=0.05,
        )
        takeover = first_b[0] - killed  # type: ignore[index]
        print(f"takeover: {takeover:.2f} s after SIGKILL ({ready_at_kill}/{N} Ready at the kill)")
        assert takeover <= TAKEOVER + MARGIN, f"{takeover:.1f} s:\n{b.tail()}"
        assert len(proxies["a"].snapshot()) == by_a  # the killed one is silent

        wait_for(
            f"all {N} Deployed and Ready",
            lambda: all(is_ready(s) for s in statuses(admin).values()),
            timeout=180,
            operator=b,
        )
        # Creates by name, from both replicas. Groups, versions and endpoints: exactly once.
        # The sagemaker provider creates models and endpoint configs without describing them
        # first (their names derive from the spec and the version), so the standby repeats
        # those the killed one made after its last status write: the same name and the same
        # definition, which SageMaker refuses as existing (the emulator accepts it again).
        sent: dict[tuple[str, str], list[str]] = {}
        for proxy in proxies.values():
            for _, op, fields in proxy.snapshot():
                if op in CREATES:
                    key = (op, fields.get(CREATES[op], "?"))
                    sent.setdefault(key, []).append(json.dumps(fields, sort_keys=True))
        twice = {k: len(v) for k, v in sent.items() if len(v) > 1}
        once = ("CreateModelPackageGroup", "CreateModelPackage", "CreateEndpoint")
        assert not [k for k in twice if k[0] in once], f"sent more than once: {twice}"
        assert all(len(set(sent[k])) == 1 for k in twice), "a repeated create changed"
        print(f"models/configs created again by name on the handover: {len(twice)}")
        per_op = Counter(op for op, _ in sent)
        # Every pipeline's objects, each by one name: a group and a version each, two stages'
        # models, configs and endpoints each (the emulator's endpoints are InService at once).
        assert per_op == {
            "CreateModelPackageGroup": N,
            "CreateModelPackage": N,
            "CreateModel": 2 * N,
            "CreateEndpointConfig": 2 * N,
            "CreateEndpoint": 2 * N,
        }, (per_op, sorted(sent))
        assert mutating(proxies["b"].snapshot()), "the standby never acted"
        assert list(peers(admin, peering_name)) == ["replica-b"]  # the dead one was cleaned
    finally:
        for op in ops.values():
            op.stop()  # by its own PID; SIGTERM, then SIGKILL after 20 s
        for proxy in proxies.values():
            proxy.stop()
