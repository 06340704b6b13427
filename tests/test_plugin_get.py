"""`kubectl modeldeploy get` on a real API server: the object from the manual example, a status
written through the status subresource as the operator writes it, and Events about it; read
through the console script and through kubectl's own plugin lookup, as text and as JSON."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from kube import kubectl, kubectl_path

from modeldeploy.gitops.kube import connect
from modeldeploy.plugin.get import show

pytest_plugins = ["kube", "quiet_kube"]

ROOT = Path(__file__).resolve().parents[1]
MANUAL = (ROOT / "manifests" / "examples" / "manual.yaml").read_text()
NAME = "breast-cancer-manual"
BIN = Path(sys.executable).parent
PLUGIN = shutil.which("kubectl-modeldeploy", path=str(BIN)) or "kubectl-modeldeploy"
_namespaces = itertools.count(1)

METRICS_3 = {"auc": 0.9934, "accuracy": 0.9561, "f1": 0.965, "precision": 0.9589, "recall": 0.97}
STATUS = {
    "observedGeneration": 1,
    "phase": "AwaitingPromotion",
    "message": "staging passed with version 3; set spec.production.promotedVersion to 3 to promote",
    "modelPackageGroup": {"name": "breast-cancer-xgboost", "arn": "arn:local:group"},
    "latestVersion": {
        "version": 3,
        "arn": "arn:local:3",
        "approvalStatus": "Approved",
        "metrics": METRICS_3,
    },
    "versions": [
        {"version": 3, "approvalStatus": "Approved", "metrics": METRICS_3},
        {
            "version": 2,
            "approvalStatus": "Rejected",
            "approvalDescription": "leaks the label",
            "metrics": {"auc": 0.999, "accuracy": 0.99},
        },
        {"version": 1, "approvalStatus": "Approved"},
    ],
    "staging": {
        "endpointName": "bcm-staging",
        "endpointConfigName": "bcm-staging-3f2a",
        "version": 3,
        "endpointStatus": "InService",
        "url": "http://127.0.0.1:8081/invocations",
        "smokeTest": {
            "passed": True,
            "latencyMs": 12.4,
            "at": "2026-01-01T00:00:00Z",
            "version": 3,
            "configName": "bcm-staging-3f2a",
        },
    },
    "production": {
        "endpointName": "bcm-production",
        "endpointConfigName": "bcm-production-9c1d",
        "version": 1,
        "endpointStatus": "InService",
        "url": "http://127.0.0.1:8082/invocations",
    },
    "conditions": [
        {
            "type": t,
            "status": s,
            "reason": r,
            "message": m,
            "observedGeneration": 1,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        for t, s, r, m in [
            ("Reconciling", "False", "AwaitingPromotion", "waiting for a person"),
            ("Ready", "False", "AwaitingPromotion", "set spec.production.promotedVersion to 3"),
            ("Stalled", "False", "AwaitingPromotion", ""),
            ("Registered", "True", "Registered", "version 3 is the newest"),
            ("Approved", "True", "Approved", "version 3 is Approved"),
            ("StagingReady", "True", "SmokeTestPassed", "staging serves version 3"),
            ("ProductionReady", "False", "AwaitingPromotion", "promotedVersion is not set"),
        ]
    ],
}


@pytest.fixture
def resource(quiet_kubeconfig: Path) -> str:
    """A namespace holding the example with the status above and three Events; its name."""
    ns = f"plugin-{next(_namespaces)}"
    kubectl(quiet_kubeconfig, "create", "namespace", ns)
    kubectl(quiet_kubeconfig, "-n", ns, "apply", "-f", "-", input=MANUAL)
    write_status(quiet_kubeconfig, ns, STATUS)
    uid = kubectl(quiet_kubeconfig, "-n", ns, "get", "mdep", NAME, "-o", "jsonpath={.metadata.uid}")
    now = datetime.now(UTC)
    for n, (kind, reason, message, count, ago) in enumerate(
        [
            ("Normal", "Registered", "registered version 3", 1, 3),
            ("Warning", "SmokeTestFailed", "version 2 answered 500", 2, 2),
            ("Normal", "SmokeTestPassed", "staging passed in 12.4 ms", 1, 1),
        ]
    ):
        stamp = (now - timedelta(hours=ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{NAME}.{n}", "namespace": ns},
            "involvedObject": {
                "apiVersion": "mlops.modeldeploy.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": NAME,
                "namespace": ns,
                "uid": uid.stdout,
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "count": count,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "source": {"component": "kopf"},
        }
        kubectl(quiet_kubeconfig, "create", "-f", "-", input=json.dumps(event))
    return ns


def write_status(quiet_kubeconfig: Path, ns: str, status: dict) -> None:
    body = json.dumps({"status": status})
    kubectl(quiet_kubeconfig, "-n", ns, "patch", "mdep", NAME, "--subresource=status",
            "--type=merge", "-p", body)  # fmt: skip


def plugin_env(quiet_kubeconfig: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "KUBECONFIG")}
    return env | {"KUBECONFIG": str(quiet_kubeconfig), "PATH": f"{BIN}:{env.get('PATH', '')}"}


def run_plugin(quiet_kubeconfig: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PLUGIN, *argv],
        env=plugin_env(quiet_kubeconfig),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


EXPECTED_TABLES = """\
VERSIONS
  VERSION  APPROVAL  AUC     ACCURACY  F1      PRECISION  WHERE            DESCRIPTION
  3        Approved  0.9934  0.9561    0.9650  0.9589     newest, staging
  2        Rejected  0.9990  0.9900    -       -                           leaks the label
  1        Approved  -       -         -       -          production

STAGES
  STAGE       ENDPOINT        STATUS     VERSION  SMOKE TEST
  staging     bcm-staging     InService  3        passed 12.4 ms (v3)
  production  bcm-production  InService  1        -
  staging url: http://127.0.0.1:8081/invocations
  production url: http://127.0.0.1:8082/invocations

GATES
  CONDITION        STATUS  REASON             WHAT MOVES IT ON
  Ready            False   AwaitingPromotion  set spec.production.promotedVersion to 3
  Registered       True    Registered         version 3 is the newest
  Approved         True    Approved           version 3 is Approved
  StagingReady     True    SmokeTestPassed    staging serves version 3
  ProductionReady  False   AwaitingPromotion  promotedVersion is not set
"""


def test_get_plain_when_piped(quiet_kubeconfig, resource):
    result = run_plugin(quiet_kubeconfig, "get", NAME, "-n", resource)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b[" not in out  # piped: no colour
    head, _, rest = out.partition("\n\n")
    assert head.splitlines() == [
        f"{resource}/{NAME}  AwaitingPromotion",
        "  staging passed with version 3; set spec.production.promotedVersion to 3 to promote",
        "  group breast-cancer-xgboost on sagemaker us-east-1; approval Manual; promotion Manual",
    ]
    tables, _, events = rest.partition("\nEVENTS\n")
    assert tables == EXPECTED_TABLES
    lines = events.splitlines()
    assert re.fullmatch(r"  AGE\s+TYPE\s+REASON\s+MESSAGE", lines[0])
    assert [re.split(r"\s{2,}", line.strip()) for line in lines[1:]] == [
        ["3h", "Normal", "Registered", "registered version 3"],
        ["2h", "Warning", "SmokeTestFailed", "version 2 answered 500 (x2)"],
        ["1h", "Normal", "SmokeTestPassed", "staging passed in 12.4 ms"],
    ]


def test_get_json_is_a_stable_document(quiet_kubeconfig, resource):
    result = run_plugin(quiet_kubeconfig, "get", NAME, "-n", resource, "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == [
        "schema",
        "name",
        "namespace",
        "generation",
        "observedGeneration",
        "upToDate",
        "phase",
        "message",
        "provider",
        "region",
        "modelPackageGroup",
        "policy",
        "decisions",
        "versions",
        "stages",
        "pipeline",
        "gates",
        "events",
    ]
    assert doc["schema"] == "modeldeploy.dev/get/v1"
    assert doc["pipeline"] is None  # direct mode
    assert (doc["name"], doc["namespace"], doc["phase"]) == (NAME, resource, "AwaitingPromotion")
    assert doc["upToDate"] is True
    assert doc["decisions"] == {
        "approvedVersion": None,
        "rejectedVersions": [],
        "promotedVersion": None,
    }
    assert doc["versions"][0] == {
        "version": 3,
        "approvalStatus": "Approved",
        "approvalDescription": None,
        "metrics": dict(sorted(METRICS_3.items())),
        "newest": True,
        "servedBy": ["staging"],
    }
    assert [v["version"] for v in doc["versions"]] == [3, 2, 1]
    assert doc["versions"][2]["servedBy"] == ["production"]
    staging, production = doc["stages"]
    assert staging["smokeTest"] == {
        "passed": True,
        "latencyMs": 12.4,
        "version": 3,
        "at": "2026-01-01T00:00:00Z",
        "message": None,
    }
    assert (production["endpointName"], production["version"], production["smokeTest"]) == (
        "bcm-production",
        1,
        None,
    )
    # Every condition, in the pipeline's order (the text view hides the quiet ones).
    assert [g["type"] for g in doc["gates"]] == [
        "Ready",
        "Registered",
        "Approved",
        "StagingReady",
        "ProductionReady",
        "Reconciling",
        "Stalled",
    ]
    assert [(e["reason"], e["count"]) for e in doc["events"]] == [
        ("Registered", 1),
        ("SmokeTestFailed", 2),
        ("SmokeTestPassed", 1),
    ]
    # YAML is the same document.
    as_yaml = run_plugin(quiet_kubeconfig, "get", NAME, "-n", resource, "-o", "yaml")
    assert yaml.safe_load(as_yaml.stdout) == doc


def test_kubectl_finds_the_plugin_and_the_context_namespace(quiet_kubeconfig, resource, tmp_path):
    """`kubectl modeldeploy get` through kubectl's plugin lookup on PATH, with the namespace
    taken from a --context, as kubectl would."""
    config = yaml.safe_load(quiet_kubeconfig.read_text())
    base = config["contexts"][0]["context"]
    config["contexts"].append({"name": "team", "context": {**base, "namespace": resource}})
    team = tmp_path / "kubeconfig"
    team.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(kubectl_path()), "modeldeploy", "get", NAME, "--context", "team", "-o", "json"],
        env=plugin_env(team),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["namespace"] == resource
    missing = run_plugin(quiet_kubeconfig, "get", "nope", "-n", resource)
    assert missing.returncode == 1
    assert missing.stderr == (
        f"kubectl modeldeploy get: no ModelDeployment nope in namespace {resource} "
        "(context admin@modeldeploy-local)\n"
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_on_a_terminal_unless_no_color(quiet_kubeconfig, resource, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    kube = connect(str(quiet_kubeconfig), None, resource)
    screen = Terminal()
    show(kube, NAME, resource, None, screen)
    text = screen.getvalue()
    assert "\x1b[33mAwaitingPromotion\x1b[0m" in text  # waits for a person: yellow
    assert "\x1b[32mpassed 12.4 ms (v3)\x1b[0m" in text
    assert "\x1b[31mRejected" in text
    plain = re.sub(r"\x1b\[\d+m", "", text)
    assert EXPECTED_TABLES in plain  # colour never moves a column
    monkeypatch.setenv("NO_COLOR", "1")
    screen = Terminal()
    show(kube, NAME, resource, None, screen)
    assert "\x1b[" not in screen.getvalue()


def interruptible() -> None:
    """In the child: Ctrl-C as a terminal delivers it. A suite started in the background by a
    non-interactive shell inherits SIGINT ignored, and so would the watch (it never ended)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_watch_prints_each_change_until_interrupted(quiet_kubeconfig, resource):
    proc = subprocess.Popen(
        [PLUGIN, "get", NAME, "-n", resource, "--watch", "-o", "json"],
        env=plugin_env(quiet_kubeconfig),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["phase"] == "AwaitingPromotion"
        kubectl(quiet_kubeconfig, "-n", resource, "patch", "mdep", NAME, "--type=merge",
                "-p", '{"spec":{"production":{"promotedVersion":3}}}')  # fmt: skip
        second = json.loads(proc.stdout.readline())
        assert second["decisions"]["promotedVersion"] == 3
        assert second["upToDate"] is False  # the operator has not looked yet
        write_status(quiet_kubeconfig, resource, {"observedGeneration": 2, "phase": "Promoting"})
        third = json.loads(proc.stdout.readline())
        assert (third["phase"], third["upToDate"]) == ("Promoting", True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_plugin_decides_with_its_own_name_in_messages(quiet_kubeconfig, resource):
    result = run_plugin(quiet_kubeconfig, "approve", NAME, "--version", "3", "-n", resource)
    assert result.returncode == 0, result.stderr
    assert "+    approvedVersion: 3\n" in result.stdout
    kubectl(quiet_kubeconfig, "-n", resource, "apply", "--server-side", "--force-conflicts",
            "--field-manager=kustomize-controller", "-f", "-", input=MANUAL)  # fmt: skip
    refused = run_plugin(quiet_kubeconfig, "promote", NAME, "--version", "3", "-n", resource)
    assert refused.returncode == 1
    assert f"kubectl modeldeploy promote {NAME} --version 3 -f PATH" in refused.stderr


def test_a_reader_without_access_to_events_still_sees_the_rest(
    quiet_control_plane, quiet_kubeconfig, resource
):
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "mdep-reader", "namespace": resource},
        "rules": [
            {
                "apiGroups": ["mlops.modeldeploy.dev"],
                "resources": ["modeldeployments"],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }
    kubectl(quiet_kubeconfig, "apply", "-f", "-", input=json.dumps(role))
    kubectl(quiet_kubeconfig, "-n", resource, "create", "rolebinding", "mdep-reader",
            "--role=mdep-reader", "--user=mdep-reader")  # fmt: skip
    reader = quiet_control_plane.user_kubeconfig("mdep-reader")
    result = run_plugin(reader, "get", NAME, "-n", resource)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\nEVENTS\n  none\n")
    watching = subprocess.Popen(
        [PLUGIN, "get", NAME, "-n", resource, "--watch", "-o", "json"],
        env=plugin_env(reader),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        assert watching.stdout is not None
        assert json.loads(watching.stdout.readline())["events"] == []
        write_status(quiet_kubeconfig, resource, {"phase": "Promoting"})
        assert json.loads(watching.stdout.readline())["phase"] == "Promoting"
        watching.send_signal(signal.SIGINT)
        assert watching.wait(timeout=20) == 0
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait()
