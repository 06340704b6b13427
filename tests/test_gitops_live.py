"""Decisions on the live object, on a real API server: server-side apply of the one field as
`modeldeploy-cli`, other managers' fields left alone, and a refusal for objects that Argo CD or
Flux apply (their real field-manager names, written by server-side or client-side apply)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from kube import kubectl

from modeldeploy import cli

pytest_plugins = ["kube", "quiet_kube"]

ROOT = Path(__file__).resolve().parents[1]
MANUAL = (ROOT / "manifests" / "examples" / "manual.yaml").read_text()
NAME = "breast-cancer-manual"
_namespaces = itertools.count(1)


@pytest.fixture
def ns(quiet_kubeconfig: Path) -> str:
    name = f"gitops-live-{next(_namespaces)}"
    kubectl(quiet_kubeconfig, "create", "namespace", name)
    return name


def apply_as(quiet_kubeconfig: Path, ns: str, manager: str, text: str, server_side: bool = True):
    mode = ["--server-side"] if server_side else []
    kubectl(
        quiet_kubeconfig,
        "-n",
        ns,
        "apply",
        *mode,
        f"--field-manager={manager}",
        "-f",
        "-",
        input=text,
    )


def live(quiet_kubeconfig: Path, ns: str) -> dict:
    out = kubectl(
        quiet_kubeconfig, "-n", ns, "get", "mdep", NAME, "-o", "json", "--show-managed-fields"
    )
    return json.loads(out.stdout)


def owners(obj: dict) -> dict[str, dict]:
    """fieldsV1 of each manager (one entry per manager here)."""
    return {e["manager"]: e.get("fieldsV1", {}) for e in obj["metadata"]["managedFields"]}


def decide(quiet_kubeconfig: Path, ns: str, *argv: str) -> int:
    return cli.main([*argv, "-n", ns, "--kubeconfig", str(quiet_kubeconfig)])


def with_approval(**fields) -> str:
    doc = yaml.safe_load(MANUAL)
    doc["spec"]["approval"].update(fields)
    return yaml.safe_dump(doc, sort_keys=False)


# -- GitOps-managed objects are refused --------------------------------------------------------


@pytest.mark.parametrize(
    ("manager", "server_side", "tool"),
    [
        ("argocd-controller", True, "Argo CD"),  # Argo CD's ServerSideApply=true syncs
        ("argocd-application-controller", False, "Argo CD"),  # its client-side apply
        ("kustomize-controller", True, "Flux"),
        ("helm-controller", True, "Flux"),
    ],
)
def test_gitops_managed_object_is_refused(quiet_kubeconfig, ns, capsys, manager, server_side, tool):
    apply_as(quiet_kubeconfig, ns, manager, MANUAL, server_side)
    before = live(quiet_kubeconfig, ns)
    assert manager in owners(before)

    assert decide(quiet_kubeconfig, ns, "approve", NAME, "--version", "2") == 1
    err = capsys.readouterr().err
    assert err.startswith("modeldeploy approve: refusing to approve version 2 on the live object:")
    assert f"{ns}/{NAME} is managed by {tool} (field manager {manager} " in err
    assert "The change belongs in git" in err
    assert f"modeldeploy approve {NAME} --version 2 -f PATH/TO/MANIFEST.yaml" in err
    assert "--force" in err

    after = live(quiet_kubeconfig, ns)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


def test_reject_refusal_names_the_reason_in_the_command(quiet_kubeconfig, ns, capsys):
    apply_as(quiet_kubeconfig, ns, "kustomize-controller", MANUAL)
    argv = ["reject", NAME, "--version", "3", "--reason", "AUC fell: 0.81"]
    assert decide(quiet_kubeconfig, ns, *argv) == 1
    err = capsys.readouterr().err
    assert f'reject {NAME} --version 3 --reason "AUC fell: 0.81" -f PATH' in err


def test_flux_label_alone_is_enough(quiet_kubeconfig, ns, capsys):
    """An object whose managedFields were rewritten by someone else still carries Flux's
    labels."""
    doc = yaml.safe_load(MANUAL)
    doc["metadata"]["labels"] = {
        "kustomize.toolkit.fluxcd.io/name": "apps",
        "kustomize.toolkit.fluxcd.io/namespace": "flux-system",
    }
    apply_as(quiet_kubeconfig, ns, "kubectl", yaml.safe_dump(doc))
    assert decide(quiet_kubeconfig, ns, "promote", NAME, "--version", "1") == 1
    err = capsys.readouterr().err
    assert "managed by Flux (Kustomization flux-system/apps (label" in err


def test_force_changes_the_live_object_and_warns(quiet_kubeconfig, ns, capsys):
    apply_as(quiet_kubeconfig, ns, "argocd-controller", with_approval(approvedVersion=1))
    assert decide(quiet_kubeconfig, ns, "approve", NAME, "--version", "2", "--force") == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "Argo CD" in captured.err
    assert "took over spec.approval.approvedVersion from argocd-controller" in captured.out
    obj = live(quiet_kubeconfig, ns)
    assert obj["spec"]["approval"]["approvedVersion"] == 2
    managed = owners(obj)
    assert managed["modeldeploy-cli"]["f:spec"] == {"f:approval": {"f:approvedVersion": {}}}
    # Argo CD keeps the rest of what it applied.
    assert "f:policy" in managed["argocd-controller"]["f:spec"]["f:approval"]
    assert "f:approvedVersion" not in managed["argocd-controller"]["f:spec"]["f:approval"]


# -- server-side apply of the one field ---------------------------------------------------------


def test_each_decision_changes_only_its_field(quiet_kubeconfig, ns, capsys):
    """A person's kubectl apply created the object (manager `kubectl`); each decision changes
    its field, keeps the earlier decisions (restated from managedFields) and every field
    another manager owns."""
    apply_as(
        quiet_kubeconfig,
        ns,
        "kubectl",
        with_approval(approvedVersion=1, rejectedVersions=[{"version": 3, "reason": "slow"}]),
    )
    spec = live(quiet_kubeconfig, ns)["spec"]

    def step(argv: list[str], change) -> dict:
        nonlocal spec
        assert decide(quiet_kubeconfig, ns, *argv) == 0, capsys.readouterr().err
        obj = live(quiet_kubeconfig, ns)
        change(spec)
        assert obj["spec"] == spec
        return obj

    def approve(v):
        return lambda s: s["approval"].update(approvedVersion=v)

    obj = step(["approve", NAME, "--version", "2"], approve(2))
    out = capsys.readouterr().out
    assert "-    approvedVersion: 1\n+    approvedVersion: 2\n" in out.replace("  approval", "")
    assert "took over spec.approval.approvedVersion from kubectl" in out
    assert f"{ns}/{NAME}: approve version 2 (server-side apply as modeldeploy-cli)" in out
    kubectl_fields = owners(obj)["kubectl"]["f:spec"]
    assert "f:approvedVersion" not in kubectl_fields["f:approval"]
    assert 'k:{"version":3}' in kubectl_fields["f:approval"]["f:rejectedVersions"]
    assert set(kubectl_fields) >= {"f:staging", "f:production", "f:modelPackageGroup"}

    def reject(v, reason):
        return lambda s: s["approval"]["rejectedVersions"].append({"version": v, "reason": reason})

    obj = step(
        ["reject", NAME, "--version", "4", "--reason", "leaks the label"],
        reject(4, "leaks the label"),
    )
    cli_fields = owners(obj)["modeldeploy-cli"]["f:spec"]["f:approval"]
    # The approval made before is still this manager's, so it was not dropped.
    assert "f:approvedVersion" in cli_fields
    assert set(cli_fields["f:rejectedVersions"]) == {'k:{"version":4}'}

    def promote(v):
        return lambda s: s["production"].update(promotedVersion=v)

    step(["promote", NAME, "--version", "2"], promote(2))

    # Approving a version someone else rejected takes it off the list (a guarded JSON patch).
    def approve_rejected(s):
        s["approval"]["approvedVersion"] = 3
        s["approval"]["rejectedVersions"] = [{"version": 4, "reason": "leaks the label"}]

    step(["approve", NAME, "--version", "3"], approve_rejected)

    # The same decision again is a no-op, not a write.
    rv = live(quiet_kubeconfig, ns)["metadata"]["resourceVersion"]
    assert decide(quiet_kubeconfig, ns, "approve", NAME, "--version", "3") == 0
    assert "already records 'approve version 3'" in capsys.readouterr().out
    assert live(quiet_kubeconfig, ns)["metadata"]["resourceVersion"] == rv

    # Rejecting the approved version is refused before anything is sent.
    assert decide(quiet_kubeconfig, ns, "reject", NAME, "--version", "3", "--reason", "x") == 1
    assert "approve another version first" in capsys.readouterr().err


def write_status(kubeconfig, ns: str, status: dict) -> None:
    """What the operator would have written, through the status subresource."""
    patch = ["patch", "mdep", NAME, "--subresource=status", "--type=merge"]
    kubectl(kubeconfig, "-n", ns, *patch, "-p", json.dumps(status))


def test_rollback_goes_to_the_live_previous_version(quiet_kubeconfig, ns, capsys):
    apply_as(quiet_kubeconfig, ns, "kubectl", MANUAL)
    assert decide(quiet_kubeconfig, ns, "rollback", NAME) == 1
    assert "has no status.production.previousVersion" in capsys.readouterr().err
    status = {"status": {"production": {"endpointName": "p", "version": 5, "previousVersion": 4}}}
    write_status(quiet_kubeconfig, ns, status)
    assert decide(quiet_kubeconfig, ns, "rollback", NAME) == 0
    assert "roll production back to version 4" in capsys.readouterr().out
    assert live(quiet_kubeconfig, ns)["spec"]["production"]["promotedVersion"] == 4


def test_rollback_in_a_file_reads_previous_version_from_the_live_object(
    quiet_kubeconfig, ns, tmp_path, capsys
):
    apply_as(quiet_kubeconfig, ns, "kustomize-controller", MANUAL)
    status = {"status": {"production": {"endpointName": "p", "version": 2, "previousVersion": 1}}}
    write_status(quiet_kubeconfig, ns, status)
    path = tmp_path / "manual.yaml"
    path.write_text(MANUAL)
    # Flux manages the live object, so the file is the place for the change.
    assert decide(quiet_kubeconfig, ns, "rollback", NAME, "-f", str(path)) == 0
    assert "+    promotedVersion: 1\n" in capsys.readouterr().out
    assert yaml.safe_load(path.read_text())["spec"]["production"]["promotedVersion"] == 1


def test_missing_object_and_context_errors(quiet_kubeconfig, ns, capsys):
    assert decide(quiet_kubeconfig, ns, "approve", "nope", "--version", "1") == 1
    assert f"no ModelDeployment nope in namespace {ns}" in capsys.readouterr().err
    argv = ["approve", NAME, "--version", "1", "--kubeconfig", str(quiet_kubeconfig)]
    assert cli.main([*argv, "--context", "elsewhere"]) == 1
    assert "no context elsewhere in" in capsys.readouterr().err
