"""What Flux and Argo CD make of live ModelDeployments, on a real API server: kstatus
(sigs.k8s.io/cli-utils, behind Flux's `wait: true`) and the shipped Argo CD health script (on
gopher-lua with Argo's library setup), computed on the objects as the API server returns them.

- a new object, before the operator's first status write, reads as in progress (the CRD's
  status default `observedGeneration: 0`), never as `Current`;
- a gate waiting for a person is InProgress to kstatus and Suspended to Argo CD, with the
  operator's message;
- Deployed is Current / Healthy; a terminal failure is Failed / Degraded, with its message.

The operator runs as a process watching only this module's namespace, on the quiet control
plane (no other operator there), with the sagemaker provider against the AWS emulator.
MODELDEPLOY_UPDATE_HEALTH_FIXTURES=1 rewrites the Argo CD fixtures under testdata/ from these
live objects.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from emulator import REGION, ROLE_ARN, Emulator
from healthtools import HEALTH_DIR, HealthTools
from kube import kubectl
from operator_process import OperatorProcess, get, phase_is, wait_for

pytest_plugins = ["kube", "quiet_kube", "healthtools"]

_namespaces = itertools.count(1)
UPDATE_FIXTURES = os.environ.get("MODELDEPLOY_UPDATE_HEALTH_FIXTURES") == "1"


def manifest(name: str, artifact: str, framework: str = "3.2-0") -> dict:
    return {
        "apiVersion": "mlops.modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "provider": "sagemaker",
            "region": REGION,
            "roleArn": ROLE_ARN,
            "modelPackageGroup": {"name": name},
            "model": {"artifact": artifact, "frameworkVersion": framework},
            "approval": {"policy": "Manual"},
            "staging": {"instanceCount": 1},
            "production": {"instanceCount": 1, "promotion": "Manual"},
        },
    }


def create(kubeconfig: Path, ns: str, doc: dict) -> dict:
    kubectl(kubeconfig, "-n", ns, "create", "-f", "-", input=json.dumps(doc))
    return get(kubeconfig, ns, doc["metadata"]["name"])


def patch_spec(kubeconfig: Path, ns: str, name: str, spec: dict) -> None:
    body = json.dumps({"spec": spec})
    kubectl(kubeconfig, "-n", ns, "patch", "mdep", name, "--type", "merge", "-p", body)


def argocd(tools: HealthTools, obj: dict) -> dict:
    """Argo CD's health; the same with and without the standard libraries (argocd-cm runs the
    script without them, a built-in script with them)."""
    health = tools.argocd(obj)
    assert tools.argocd(obj, open_libs=True) == health
    return health


def save_fixture(obj: dict, name: str) -> None:
    """The live object as an Argo CD fixture, less what only the API server and kopf keep."""
    if not UPDATE_FIXTURES:
        return
    obj = copy.deepcopy(obj)
    for key in ("managedFields", "uid", "resourceVersion", "annotations", "finalizers"):
        obj["metadata"].pop(key, None)
    text = yaml.safe_dump(obj, sort_keys=False, width=100)
    (HEALTH_DIR / "testdata" / f"{name}.yaml").write_text(text)


@pytest.fixture(scope="module")
def watched_ns(quiet_kubeconfig: Path) -> str:
    name = f"health-live-{next(_namespaces)}"
    kubectl(quiet_kubeconfig, "create", "namespace", name)
    return name


@pytest.fixture(scope="module")
def operator(
    quiet_kubeconfig: Path, watched_ns: str, emulator: Emulator, tmp_path_factory
) -> Iterator[OperatorProcess]:
    env = {
        "AWS_ENDPOINT_URL": emulator.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_MAX_ATTEMPTS": "1",
        "MODELDEPLOY_DEFAULT_PROVIDER": "sagemaker",
        "MODELDEPLOY_LOCAL_DIR": str(tmp_path_factory.mktemp("health-local")),
    }
    proc = OperatorProcess(quiet_kubeconfig, env, args=("--namespace", watched_ns))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def ns(quiet_kubeconfig: Path, watched_ns: str, operator: OperatorProcess) -> Iterator[str]:
    yield watched_ns
    # Finalizers need the operator: delete while it runs (and before the emulator is reset).
    kubectl(quiet_kubeconfig, "-n", watched_ns, "delete", "mdep", "--all", "--timeout=60s")


def test_a_new_object_is_in_progress_before_the_operator_writes(
    quiet_kubeconfig: Path, healthtools: HealthTools
) -> None:
    """No operator watches this namespace: the object is as the API server keeps it."""
    ns = f"health-new-{next(_namespaces)}"
    kubectl(quiet_kubeconfig, "create", "namespace", ns)
    obj = create(quiet_kubeconfig, ns, manifest("fresh", "s3://bucket/fresh/model.tar.gz"))
    assert obj["metadata"]["generation"] == 1
    assert obj["status"] == {"observedGeneration": 0}  # the CRD's default

    assert healthtools.kstatus(obj)["status"] == "InProgress"
    assert argocd(healthtools, obj)["status"] == "Progressing"
    save_fixture(obj, "new-not-observed")

    # What the default prevents: without any status, kstatus calls the object Current.
    assert healthtools.kstatus({k: v for k, v in obj.items() if k != "status"}) == {
        "status": "Current",
        "message": "Resource is current",
    }
    # A spec change keeps it behind.
    patch_spec(quiet_kubeconfig, ns, "fresh", {"production": {"promotedVersion": 1}})
    obj = get(quiet_kubeconfig, ns, "fresh")
    assert (obj["metadata"]["generation"], obj["status"]) == (2, {"observedGeneration": 0})
    assert healthtools.kstatus(obj)["status"] == "InProgress"
    kubectl(quiet_kubeconfig, "delete", "namespace", ns, "--wait=false")


def test_gates_wait_for_a_person_then_deployed(
    quiet_kubeconfig: Path,
    ns: str,
    operator: OperatorProcess,
    healthtools: HealthTools,
    model_artifact: str,
) -> None:
    name = "gated"
    create(quiet_kubeconfig, ns, manifest(name, model_artifact))

    status = wait_for(
        "PendingApproval",
        phase_is(quiet_kubeconfig, ns, name, "PendingApproval"),
        operator=operator,
        timeout=60,
    )
    obj = get(quiet_kubeconfig, ns, name)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AwaitingApproval")
    assert healthtools.kstatus(obj)["status"] == "InProgress"
    assert argocd(healthtools, obj) == {"status": "Suspended", "message": status["message"]}
    save_fixture(obj, "awaiting-approval")

    patch_spec(quiet_kubeconfig, ns, name, {"approval": {"approvedVersion": 1}})
    status = wait_for(
        "AwaitingPromotion",
        phase_is(quiet_kubeconfig, ns, name, "AwaitingPromotion", staging=1),
        operator=operator,
        timeout=60,
    )
    obj = get(quiet_kubeconfig, ns, name)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "AwaitingPromotion")
    kstatus = healthtools.kstatus(obj)
    assert kstatus["status"] == "InProgress"
    assert kstatus["message"] == ready["message"]
    health = argocd(healthtools, obj)
    assert health == {"status": "Suspended", "message": status["message"]}
    assert "promotedVersion: 1" in health["message"]
    save_fixture(obj, "awaiting-promotion")

    patch_spec(quiet_kubeconfig, ns, name, {"production": {"promotedVersion": 1}})
    status = wait_for(
        "Deployed",
        phase_is(quiet_kubeconfig, ns, name, "Deployed", production=1),
        operator=operator,
        timeout=60,
    )
    obj = get(quiet_kubeconfig, ns, name)
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"] == 3
    assert healthtools.kstatus(obj) == {"status": "Current", "message": "Resource is Ready"}
    assert argocd(healthtools, obj) == {"status": "Healthy", "message": status["message"]}
    save_fixture(obj, "deployed")


def test_a_terminal_failure_is_failed_and_degraded(
    quiet_kubeconfig: Path,
    ns: str,
    operator: OperatorProcess,
    healthtools: HealthTools,
    model_artifact: str,
) -> None:
    """A serving image too old for the model's xgboost: refused before registering, Stalled."""
    name = "skewed"
    create(quiet_kubeconfig, ns, manifest(name, model_artifact, framework="1.7-1"))
    status = wait_for(
        "Failed", phase_is(quiet_kubeconfig, ns, name, "Failed"), operator=operator, timeout=60
    )
    obj = get(quiet_kubeconfig, ns, name)
    stalled = next(c for c in status["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "RegistrationFailed")
    assert healthtools.kstatus(obj) == {"status": "Failed", "message": stalled["message"]}
    assert argocd(healthtools, obj) == {"status": "Degraded", "message": status["message"]}
    save_fixture(obj, "stalled")
