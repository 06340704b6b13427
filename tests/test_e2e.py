"""End to end: a real kube-apiserver, the operator as a process under its least-privilege
identity, the sagemaker provider against the AWS emulator over HTTP, and kubectl.

The emulator answers CreateEndpoint with InService at once and has no UpdateEndpoint, so the
sagemaker tests cover every path that creates endpoints; updating a serving endpoint (a second
promotion, rollback) is tested here with the local provider, whose endpoints really update.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from emulator import REGION, Emulator
from kube import kubectl
from operator_process import OperatorProcess, get, phase_is, wait_for, wait_ready

from modeldeploy.training.train import train

pytest_plugins = ["kube"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"
CORPUS = sorted((ROOT / "tests" / "invalid_specs").glob("*.yaml"))
OPERATOR_USER = "modeldeploy-operator"
_namespaces = itertools.count(1)


def aws_env(emulator: Emulator) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": emulator.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_MAX_ATTEMPTS": "1",
    }


@pytest.fixture(scope="session")
def operator_kubeconfig(control_plane, kubeconfig: Path, crd) -> Path:
    """A client-certificate user bound to the ClusterRole the manifests ship, and nothing else."""
    kubectl(kubeconfig, "apply", "-f", str(ROOT / "manifests" / "base" / "clusterrole.yaml"))
    binding = kubectl(
        kubeconfig, "get", "clusterrolebinding", "modeldeploy-operator-user", check=False
    )
    if binding.returncode != 0:
        kubectl(
            kubeconfig,
            "create",
            "clusterrolebinding",
            "modeldeploy-operator-user",
            "--clusterrole=modeldeploy",
            f"--user={OPERATOR_USER}",
        )
    return control_plane.user_kubeconfig(OPERATOR_USER)


@pytest.fixture(scope="session")
def operator(operator_kubeconfig: Path, emulator: Emulator, tmp_path_factory):
    env = aws_env(emulator) | {
        "MODELDEPLOY_DEFAULT_PROVIDER": "sagemaker",
        "MODELDEPLOY_LOCAL_DIR": str(tmp_path_factory.mktemp("local-provider")),
    }
    proc = OperatorProcess(operator_kubeconfig, env)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def seed_model(tmp_path_factory):
    return train(tmp_path_factory.mktemp("seed"), progress=False)


@pytest.fixture(scope="session")
def second_model(tmp_path_factory):
    """Different bytes (another split), so it registers as a new version."""
    return train(tmp_path_factory.mktemp("second"), seed=1, progress=False)


@pytest.fixture
def ns(kubeconfig: Path, operator: OperatorProcess, emulator: Emulator):
    name = f"e2e-{next(_namespaces)}"
    kubectl(kubeconfig, "create", "namespace", name)
    emulator.reset()
    yield name
    # Finalizers need the operator: delete while it runs, then forget the emulator's state.
    kubectl(kubeconfig, "-n", name, "delete", "mdep", "--all", "--timeout=60s", check=False)
    emulator.reset()


@pytest.fixture
def s3(emulator: Emulator):
    client = boto3.client(
        "s3",
        endpoint_url=emulator.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return client


def apply_example(kubeconfig: Path, ns: str, example: str, **spec_changes) -> dict:
    doc = yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text())
    doc["spec"].update(spec_changes)
    kubectl(kubeconfig, "-n", ns, "apply", "-f", "-", input=yaml.safe_dump(doc))
    return doc


def patch_spec(kubeconfig: Path, ns: str, name: str, spec: dict) -> None:
    body = json.dumps({"spec": spec})
    kubectl(kubeconfig, "-n", ns, "patch", "mdep", name, "--type", "merge", "-p", body)


def register_with_cli(emulator: Emulator, seed, group: str, s3) -> str:
    s3.create_bucket(Bucket="e2e-artifacts")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "modeldeploy",
            "register",
            "--group",
            group,
            "--artifact",
            str(seed.model_tar),
            "--metrics",
            str(seed.evaluation),
            "--bucket",
            "e2e-artifacts",
        ],
        env=aws_env(emulator) | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def upload_automatic_example_artifacts(s3, seed, metrics: dict, doc: dict) -> None:
    bucket, key = doc["spec"]["model"]["artifact"][5:].split("/", 1)
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(seed.model_tar), bucket, key)
    _, metrics_key = doc["spec"]["model"]["metrics"][5:].split("/", 1)
    s3.put_object(Bucket=bucket, Key=metrics_key, Body=json.dumps(metrics).encode())


def endpoints(emulator: Emulator) -> list[str]:
    sm = boto3.client(
        "sagemaker",
        endpoint_url=emulator.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"])


def versions(emulator: Emulator, group: str) -> list[dict]:
    sm = boto3.client(
        "sagemaker",
        endpoint_url=emulator.url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return sm.list_model_packages(ModelPackageGroupName=group)["ModelPackageSummaryList"]


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", CORPUS, ids=[p.stem for p in CORPUS])
def test_api_server_refuses_invalid_manifest(kubeconfig: Path, crd, manifest: Path):
    doc = yaml.safe_load(manifest.read_text())
    field = doc["metadata"]["annotations"]["test.modeldeploy.dev/expect-field"]
    result = kubectl(
        kubeconfig, "-n", "default", "apply", "--dry-run=server", "-f", str(manifest), check=False
    )
    assert result.returncode != 0, f"{manifest.name} was accepted"
    assert field in result.stderr, result.stderr


def test_manual_example_through_both_gates(kubeconfig, ns, operator, emulator, seed_model, s3):
    doc = yaml.safe_load((EXAMPLES / "manual.yaml").read_text())
    name, group = doc["metadata"]["name"], doc["spec"]["modelPackageGroup"]["name"]
    arn = register_with_cli(emulator, seed_model, group, s3)
    assert arn.endswith("/1")
    emulator.set_invoke_results([{"Body": "0.0125\n", "ContentType": "text/csv"}])
    apply_example(kubeconfig, ns, "manual")

    status = wait_for(
        "PendingApproval", phase_is(kubeconfig, ns, name, "PendingApproval"), operator=operator
    )
    assert status["latestVersion"]["approvalStatus"] == "PendingManualApproval"
    table = kubectl(kubeconfig, "-n", ns, "get", "mdep").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "GROUP",
        "LATEST",
        "APPROVAL",
        "STAGING",
        "PROD",
        "PHASE",
        "READY",
        "AGE",
    ]
    assert row.split()[:4] == [name, group, "1", "PendingManualApproval"]
    assert "PendingApproval" in row and "False" in row

    patch_spec(kubeconfig, ns, name, {"approval": {"approvedVersion": 1}})
    status = wait_for(
        "AwaitingPromotion", phase_is(kubeconfig, ns, name, "AwaitingPromotion"), operator=operator
    )
    assert status["staging"]["version"] == 1
    assert status["staging"]["smokeTest"]["passed"] is True
    assert status["staging"]["endpointStatus"] == "InService"

    patch_spec(kubeconfig, ns, name, {"production": {"promotedVersion": 1}})
    wait_ready(kubeconfig, ns, name, 90)
    resource = get(kubeconfig, ns, name)
    assert resource["status"]["phase"] == "Deployed"
    assert resource["status"]["observedGeneration"] == resource["metadata"]["generation"]
    wide = kubectl(kubeconfig, "-n", ns, "get", "mdep", "-o", "wide").stdout
    assert "MESSAGE" in wide.splitlines()[0] and "production serves version 1" in wide
    row = kubectl(kubeconfig, "-n", ns, "get", "mdep", "--no-headers").stdout.split()
    assert row[:7] == [name, group, "1", "Approved", "1", "1", "Deployed"] and row[7] == "True"
    events = kubectl(kubeconfig, "-n", ns, "get", "events", "-o", "json").stdout
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"Registered", "Approved", "DeployingStaging", "Promoting"} - reasons <= {"Registered"}


def test_automatic_rejection_leaves_production_alone(
    kubeconfig, ns, operator, emulator, seed_model, second_model, s3
):
    doc = yaml.safe_load((EXAMPLES / "automatic.yaml").read_text())
    name = doc["metadata"]["name"]
    upload_automatic_example_artifacts(s3, seed_model, seed_model.metrics, doc)
    emulator.set_invoke_results([{"Body": "0.0125\n", "ContentType": "text/csv"}])
    apply_example(kubeconfig, ns, "automatic")
    status = wait_for("Deployed", phase_is(kubeconfig, ns, name, "Deployed"), operator=operator)
    assert status["production"]["version"] == 1
    assert status["latestVersion"]["approvalStatus"] == "Approved"
    serving = status["production"]["endpointConfigName"]

    # A new artifact whose metrics fail a rule: Rejected, and production keeps serving version 1.
    bucket = doc["spec"]["model"]["artifact"][5:].split("/", 1)[0]
    s3.upload_file(str(second_model.model_tar), bucket, "breast-cancer/next/model.tar.gz")
    bad = dict(second_model.metrics, auc=0.61)
    s3.put_object(
        Bucket=bucket, Key="breast-cancer/next/evaluation.json", Body=json.dumps(bad).encode()
    )
    model = dict(doc["spec"]["model"])
    model["artifact"] = f"s3://{bucket}/breast-cancer/next/model.tar.gz"
    model["metrics"] = f"s3://{bucket}/breast-cancer/next/evaluation.json"
    patch_spec(kubeconfig, ns, name, {"model": model})
    status = wait_for("Rejected", phase_is(kubeconfig, ns, name, "Rejected"), operator=operator)
    assert status["latestVersion"]["version"] == 2
    assert status["latestVersion"]["approvalStatus"] == "Rejected"
    assert "auc 0.61" in status["latestVersion"]["approvalDescription"]
    assert status["production"]["version"] == 1
    assert status["production"]["endpointConfigName"] == serving
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"  # production still serves what it should


def test_operator_identity_is_least_privilege(operator_kubeconfig: Path):
    def can(*args: str) -> bool:
        result = kubectl(operator_kubeconfig, "auth", "can-i", *args, check=False)
        return result.stdout.strip() == "yes"

    assert can("watch", "modeldeployments.mlops.modeldeploy.dev", "--all-namespaces")
    assert can("patch", "modeldeployments.mlops.modeldeploy.dev", "--subresource=status", "-n", "x")
    assert can("create", "events", "-n", "x")
    for verb, resource in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("get", "configmaps"),
        ("create", "deployments.apps"),
        ("delete", "modeldeployments.mlops.modeldeploy.dev"),
        ("create", "modeldeployments.mlops.modeldeploy.dev"),
        ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
        ("create", "pods"),
        ("update", "clusterroles.rbac.authorization.k8s.io"),
    ]:
        assert not can(verb, resource, "--all-namespaces"), f"operator may {verb} {resource}"


def test_restart_mid_pipeline_resumes_without_duplicates(
    kubeconfig, ns, operator, emulator, seed_model, s3
):
    doc = yaml.safe_load((EXAMPLES / "automatic.yaml").read_text())
    name, group = doc["metadata"]["name"], doc["spec"]["modelPackageGroup"]["name"]
    upload_automatic_example_artifacts(s3, seed_model, seed_model.metrics, doc)
    emulator.set_invoke_results([{"Body": "0.0125\n", "ContentType": "text/csv"}])
    operator.stop()
    try:
        operator.start()
        apply_example(kubeconfig, ns, "automatic")
        # Kill it as soon as the version is registered, before staging exists.
        wait_for(
            "registration",
            lambda: (get(kubeconfig, ns, name).get("status") or {}).get("registration"),
            operator=operator,
            interval=0.05,
        )
        operator.stop(sig=9)
    finally:
        operator.start()
    wait_for("Deployed", phase_is(kubeconfig, ns, name, "Deployed"), operator=operator)
    assert len(versions(emulator, group)) == 1
    staging = [e for e in endpoints(emulator) if e.endswith("-staging")]
    production = [e for e in endpoints(emulator) if e.endswith("-prod")]
    assert len(staging) == 1 and len(production) == 1


@pytest.mark.parametrize("policy", ["Delete", "Retain"])
def test_deletion_follows_policy(kubeconfig, ns, operator, emulator, seed_model, s3, policy):
    doc = yaml.safe_load((EXAMPLES / "automatic.yaml").read_text())
    name = doc["metadata"]["name"]
    upload_automatic_example_artifacts(s3, seed_model, seed_model.metrics, doc)
    emulator.set_invoke_results([{"Body": "0.0125\n", "ContentType": "text/csv"}])
    apply_example(kubeconfig, ns, "automatic", deletionPolicy=policy)
    status = wait_for("Deployed", phase_is(kubeconfig, ns, name, "Deployed"), operator=operator)
    ours = {status["staging"]["endpointName"], status["production"]["endpointName"]}
    assert ours <= set(endpoints(emulator))
    kubectl(kubeconfig, "-n", ns, "delete", "mdep", name, "--timeout=60s", timeout=70)
    left = ours & set(endpoints(emulator))
    assert left == (ours if policy == "Retain" else set())


def test_rollback_by_patching_promoted_version(kubeconfig, ns, operator, seed_model, second_model):
    doc = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
    name = doc["metadata"]["name"]
    model = dict(doc["spec"]["model"])
    model["artifact"] = f"file://{seed_model.model_tar}"
    model["metrics"] = f"file://{seed_model.evaluation}"
    apply_example(kubeconfig, ns, "local", model=model)
    wait_for(
        "AwaitingPromotion", phase_is(kubeconfig, ns, name, "AwaitingPromotion"), operator=operator
    )
    patch_spec(kubeconfig, ns, name, {"production": {"promotedVersion": 1}})
    wait_ready(kubeconfig, ns, name, 90)

    model["artifact"] = f"file://{second_model.model_tar}"
    model["metrics"] = f"file://{second_model.evaluation}"
    patch_spec(kubeconfig, ns, name, {"model": model})
    status = wait_for(
        "AwaitingPromotion of version 2",
        phase_is(kubeconfig, ns, name, "AwaitingPromotion", staging=2),
        operator=operator,
    )
    assert status["production"]["version"] == 1
    patch_spec(kubeconfig, ns, name, {"production": {"promotedVersion": 2}})
    status = wait_for(
        "production on version 2",
        phase_is(kubeconfig, ns, name, "Deployed", production=2),
        operator=operator,
    )
    assert status["production"]["previousVersion"] == 1

    patch_spec(kubeconfig, ns, name, {"production": {"promotedVersion": 1}})
    status = wait_for(
        "rollback to version 1",
        phase_is(kubeconfig, ns, name, "Deployed", production=1),
        operator=operator,
    )
    assert status["production"]["previousVersion"] == 2
    wait_ready(kubeconfig, ns, name, 30)
    row = kubectl(kubeconfig, "-n", ns, "get", "mdep", "--no-headers").stdout.split()
    assert row[4:8] == ["2", "1", "Deployed", "True"]  # STAGING 2, PROD 1


def test_operator_metrics_move_as_the_pipeline_moves(
    kubeconfig, ns, operator, emulator, seed_model, s3
):
    """Scrape the operator process's /metrics while a resource goes from nothing to Deployed
    on the sagemaker provider (the emulator), then is deleted."""
    doc = yaml.safe_load((EXAMPLES / "automatic.yaml").read_text())
    name = doc["metadata"]["name"]
    upload_automatic_example_artifacts(s3, seed_model, seed_model.metrics, doc)
    emulator.set_invoke_results([{"Body": "0.0125\n", "ContentType": "text/csv"}])
    start = operator.metrics()
    who = {"namespace": ns, "name": name}

    def moved(now: dict, metric: str, /, **labels: str) -> float:
        key = (metric, frozenset(labels.items()))
        return now.get(key, 0.0) - start.get(key, 0.0)

    def phase(now: dict) -> str | None:
        return next(
            (
                dict(labels)["phase"]
                for (metric, labels), value in now.items()
                if metric == "modeldeploy_resource_phase"
                and value == 1
                and {("namespace", ns), ("name", name)} <= labels
            ),
            None,
        )

    apply_example(kubeconfig, ns, "automatic")
    # Registered: the action and its AWS calls are counted before the status says so.
    wait_for(
        "registration",
        lambda: (get(kubeconfig, ns, name).get("status") or {}).get("registration"),
        operator=operator,
    )
    now = operator.metrics()
    assert moved(now, "modeldeploy_actions_total", action="RegisterVersion", outcome="ok") == 1
    sm = {"provider": "sagemaker", "result": "ok"}
    assert moved(now, "modeldeploy_remote_calls_total", operation="CreateModelPackage", **sm) == 1
    assert moved(now, "modeldeploy_remote_calls_total", operation="GetObject", **sm) >= 1
    assert moved(now, "modeldeploy_reconcile_total", result="ok") >= 1
    assert phase(now) is not None

    wait_for("Deployed", phase_is(kubeconfig, ns, name, "Deployed"), operator=operator)
    now = wait_for(
        "the Deployed phase in /metrics",
        lambda: (lambda m: m if phase(m) == "Deployed" else None)(operator.metrics()),
        operator=operator,
    )
    actions = "modeldeploy_actions_total"
    assert moved(now, actions, action="DeployEndpoint", outcome="ok") == 2
    assert moved(now, actions, action="SmokeTest", outcome="ok") == 1
    calls = "modeldeploy_remote_calls_total"
    assert moved(now, calls, operation="CreateEndpoint", **sm) == 2
    assert moved(now, calls, operation="InvokeEndpoint", **sm) == 1  # fast enough at once
    assert moved(now, "modeldeploy_smoke_tests_total", provider="sagemaker", result="passed") == 1
    latency = "modeldeploy_smoke_test_latency_seconds_count"
    assert moved(now, latency, provider="sagemaker") == 1
    assert moved(now, "modeldeploy_reconcile_duration_seconds_count", result="ok") >= 3
    ready = {"condition": "Ready", "status": "True"}
    assert now[("modeldeploy_resource_condition", frozenset({**who, **ready}.items()))] == 1

    kubectl(kubeconfig, "-n", ns, "delete", "mdep", name, "--timeout=60s", timeout=70)
    wait_for(
        "the deleted resource's series to go",
        lambda: phase(operator.metrics()) is None,
        operator=operator,
    )
    gone = operator.metrics()
    assert not [key for key in gone if {("namespace", ns), ("name", name)} <= key[1]]


def post_rows(url: str, rows: list[str]) -> list[float]:
    request = urllib.request.Request(
        url, data="\n".join(rows).encode(), headers={"Content-Type": "text/csv"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return [float(x) for x in response.read().decode().split()]


def test_project_mode_through_the_pipeline_and_its_gate(
    kubeconfig, ns, operator, seed_model, second_model
):
    """Project mode on the local provider, through kubectl: the operator makes the project, its
    pipeline deploys <project>-staging, the smoke test passes, promotedVersion approves the
    pipeline's ApproveDeployment and the pipeline deploys <project>-prod; a rejection in the spec
    rejects the next run at the gate; deletion takes the project and its endpoints."""
    doc = yaml.safe_load((EXAMPLES / "local.yaml").read_text())
    name, project = "bc-project", f"bc-{ns}"  # the local registry is shared by the session
    doc["metadata"]["name"] = name
    spec = doc["spec"]
    spec["modelPackageGroup"]["name"] = f"bc-project-{ns}"
    spec["model"] |= {
        "artifact": f"file://{seed_model.model_tar}",
        "metrics": f"file://{seed_model.evaluation}",
    }
    spec["deployment"] = {"via": "Project", "project": {"name": project}}
    kubectl(kubeconfig, "-n", ns, "apply", "-f", "-", input=yaml.safe_dump(doc))

    status = wait_for(
        "the pipeline to wait at its gate with version 1",
        phase_is(kubeconfig, ns, name, "AwaitingPromotion", staging=1),
        operator=operator,
    )
    assert status["project"]["status"] == "CreateCompleted"
    stages = {s["name"]: s for s in status["project"]["stages"]}
    assert list(stages) == ["Source", "Build", "DeployStaging", "DeployProd"]
    gate = {a["name"]: a for a in stages["DeployStaging"]["actions"]}["ApproveDeployment"]
    assert gate["status"] == "InProgress"
    assert status["staging"]["endpointName"] == f"{project}-staging"
    assert status["staging"]["smokeTest"]["passed"] is True
    assert "set spec.production.promotedVersion: 1 to approve it" in status["message"]
    payload = spec["staging"]["smokeTest"]["payload"]
    (score,) = post_rows(status["staging"]["url"], [payload])
    assert 0.0 <= score <= 1.0

    patch_spec(kubeconfig, ns, name, {"production": {"promotedVersion": 1}})
    status = wait_for(
        "the pipeline to deploy production",
        phase_is(kubeconfig, ns, name, "Deployed", production=1),
        operator=operator,
    )
    wait_ready(kubeconfig, ns, name, 30)
    assert status["production"]["endpointName"] == f"{project}-prod"
    recorded = status["project"]["gate"]
    assert (recorded["decision"], recorded["version"], recorded["by"]) == (
        "Approved",
        1,
        "modeldeploy",
    )
    assert post_rows(status["production"]["url"], [payload]) == [score]
    row = kubectl(kubeconfig, "-n", ns, "get", "mdep", name, "--no-headers").stdout.split()
    assert row[4:8] == ["1", "1", "Deployed", "True"]  # STAGING 1, PROD 1

    # Version 2 is approved by the rules, deployed to staging by a new run, and rejected at the
    # gate from the spec; the registry's rejection starts a run that brings version 1 back.
    second = {
        "artifact": f"file://{second_model.model_tar}",
        "metrics": f"file://{second_model.evaluation}",
    }
    patch_spec(kubeconfig, ns, name, {"model": second})
    wait_for(
        "version 2 on staging, waiting at the gate",
        phase_is(kubeconfig, ns, name, "AwaitingPromotion", staging=2, production=1),
        operator=operator,
    )
    rejection = {"version": 2, "reason": "worse on the held-out segment"}
    patch_spec(kubeconfig, ns, name, {"approval": {"rejectedVersions": [rejection]}})
    status = wait_for(  # Rejected: the newest version is, as in direct mode
        "version 1 back on staging and production untouched",
        phase_is(kubeconfig, ns, name, "Rejected", staging=1, production=1),
        timeout=120,
        operator=operator,
    )
    events = json.loads(kubectl(kubeconfig, "-n", ns, "get", "events", "-o", "json").stdout)
    decided = [e["message"] for e in events["items"] if e["reason"] == "GateDecided"]
    assert any("rejected: worse on the held-out segment" in m for m in decided), decided

    staging_url = status["staging"]["url"]
    kubectl(kubeconfig, "-n", ns, "delete", "mdep", name, "--timeout=60s", timeout=70)
    with pytest.raises(OSError):
        post_rows(staging_url, [payload])
