"""The shipped Argo CD health check (manifests/argocd/) on a real gopher-lua with Argo CD's
library setup (hack/healthtools/luahealth): its fixtures, as Argo's own TestLuaHealthScript
runs them, with the standard libraries off (argocd-cm's default) and on (built-in scripts);
kstatus on the same objects; and the argocd-cm and Helm-values copies of the script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from healthtools import HEALTH_DIR, HealthTools

pytest_plugins = ["healthtools"]

ROOT = Path(__file__).resolve().parents[1]
KEY = "resource.customizations.health.mlops.modeldeploy.dev_ModelDeployment"
SCRIPT = (HEALTH_DIR / "health.lua").read_text()
TESTS = yaml.safe_load((HEALTH_DIR / "health_test.yaml").read_text())["tests"]

# What Flux (kstatus) says of the same fixtures: never Current unless Argo CD says Healthy.
KSTATUS = {
    "new-not-observed": "InProgress",
    "new-no-status": "Current",  # why the CRD defaults status.observedGeneration to 0
    "awaiting-approval": "InProgress",
    "awaiting-promotion": "InProgress",
    "promoting": "InProgress",
    "deployed": "Current",
    "generation-behind": "InProgress",
    "stalled": "Failed",
}


def fixture(path: str) -> dict:
    return yaml.safe_load((HEALTH_DIR / path).read_text())


@pytest.mark.parametrize("open_libs", [False, True], ids=["argocd-cm", "built-in"])
def test_fixtures_pass_as_argo_runs_them(healthtools: HealthTools, open_libs: bool) -> None:
    args = ["-open-libs"] if open_libs else []
    proc = healthtools.run("luahealth", *args, "-test", str(HEALTH_DIR))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == f"{len(TESTS)} passed, 0 failed"


def test_fixtures_cover_every_object_and_health() -> None:
    listed = sorted(Path(t["inputPath"]).stem for t in TESTS)
    assert listed == sorted(p.stem for p in (HEALTH_DIR / "testdata").glob("*.yaml"))
    assert sorted(KSTATUS) == listed
    assert {t["healthStatus"]["status"] for t in TESTS} == {
        "Progressing",
        "Suspended",
        "Healthy",
        "Degraded",
    }
    for t in TESTS:
        obj = fixture(t["inputPath"])
        assert obj["apiVersion"] == "mlops.modeldeploy.dev/v1alpha1"
        assert obj["kind"] == "ModelDeployment"


@pytest.mark.parametrize("test", TESTS, ids=[Path(t["inputPath"]).stem for t in TESTS])
def test_kstatus_agrees(healthtools: HealthTools, test: dict) -> None:
    """Flux and Argo CD tell the same story: Healthy exactly when kstatus says Current (the
    object without status aside), Degraded exactly when Failed."""
    obj = fixture(test["inputPath"])
    got = healthtools.kstatus(obj)["status"]
    assert got == KSTATUS[Path(test["inputPath"]).stem]
    if "status" in obj:
        argo = test["healthStatus"]["status"]
        assert (got == "Current") == (argo == "Healthy")
        assert (got == "Failed") == (argo == "Degraded")


def test_the_runner_withholds_string_and_math(healthtools: HealthTools, tmp_path: Path) -> None:
    """Argo CD's setup, not gopher-lua's defaults: without useOpenLibs a script has no `string`
    and no `math`, but has base, table and a reduced os (time, date; also via require)."""
    script = tmp_path / "probe.lua"
    script.write_text(
        "local os2 = require('os')\n"
        "return {status = 'Healthy', message = type(string) .. ',' .. type(math) .. ','"
        " .. type(table.insert) .. ',' .. type(os.time) .. ',' .. type(os.execute) .. ','"
        " .. type(os2.date) .. ',' .. type(io)}\n"
    )
    run = healthtools.run
    closed = run("luahealth", "-script", str(script), stdin="{}")
    assert json.loads(closed.stdout)["message"] == "nil,nil,function,function,nil,function,nil"
    opened = run("luahealth", "-open-libs", "-script", str(script), stdin="{}")
    assert json.loads(opened.stdout)["message"].startswith("table,table,function,function,function")


def test_an_invalid_status_or_error_is_unknown(healthtools: HealthTools, tmp_path: Path) -> None:
    script = tmp_path / "bad.lua"
    script.write_text("return {status = 'Fine'}\n")
    out = healthtools.run("luahealth", "-script", str(script), stdin="{}")
    assert json.loads(out.stdout) == {
        "status": "Unknown",
        "message": "Lua returned an invalid health status",
    }
    script.write_text("return {status = string.format('%s', 'Healthy')}\n")
    out = json.loads(healthtools.run("luahealth", "-script", str(script), stdin="{}").stdout)
    assert out["status"] == "Unknown" and "string" in out["message"]


def test_argocd_cm_and_helm_values_carry_the_script_verbatim() -> None:
    cm = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm.yaml").read_text())
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert cm["data"] == {KEY: SCRIPT}, "copy health.lua into manifests/argocd/argocd-cm.yaml"
    values = yaml.safe_load((ROOT / "manifests" / "argocd" / "argo-cd-values.yaml").read_text())
    assert values == {"configs": {"cm": {KEY: SCRIPT}}}, "copy health.lua into argo-cd-values"


def test_the_key_names_the_crd_group_and_kind() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "modeldeployment.yaml").read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    assert f"resource.customizations.health.{group}_{kind}" == KEY
    assert HEALTH_DIR.relative_to(ROOT / "manifests" / "argocd" / "resource_customizations") == (
        Path(group) / kind
    )


def test_the_application_example_syncs_retirements_too() -> None:
    """manifests/argocd/application.yaml (which `make gitops-e2e` runs): automated sync that
    prunes, puts back live edits of the gates, and may empty the Application — without
    allowEmpty, deleting the last model's file prunes nothing."""
    app = yaml.safe_load((ROOT / "manifests" / "argocd" / "application.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    assert app["spec"]["syncPolicy"]["automated"] == {
        "prune": True,
        "selfHeal": True,
        "allowEmpty": True,
    }
