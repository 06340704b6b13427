"""Table tests of the pure planner: (spec, status, observed) -> actions + status."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from modeldeploy import naming
from modeldeploy.reconcile import planner
from modeldeploy.reconcile.actions import (
    Action,
    ClaimGroup,
    DeleteEndpoint,
    DeployEndpoint,
    EnsureGroup,
    RegisterVersion,
    SetApproval,
    SmokeTest,
)
from modeldeploy.reconcile.conditions import condition
from modeldeploy.reconcile.finalize import finalize
from modeldeploy.reconcile.gates import evaluate_rules
from modeldeploy.reconcile.stages import desired_config
from modeldeploy.reconcile.types import DEFAULT_TIMING, Context, Event
from modeldeploy.remote import Endpoint, ModelVersion, Observed
from modeldeploy.spec import ApprovalRule, parse_spec
from modeldeploy.status import parse_status

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
GROUP_ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package-group/churn"
STAGING = naming.endpoint_name("ml", "churn", "staging")
PROD = naming.endpoint_name("ml", "churn", "production")


@dataclass
class Planned:
    actions: list[Action]
    status: dict
    events: list[Event]
    requeue_after: float


def plan(spec, status: dict, observed: Observed, ctx: Context, timing=DEFAULT_TIMING) -> Planned:
    """A pass whose actions are not run: the plan, finalized into the status it writes."""
    old = parse_status(status)
    p = planner.plan(spec, old, observed, ctx, timing)
    new, events = finalize(old, p.status, p.verdict, ctx)
    return Planned(p.actions, new.to_dict(), p.events + events, p.verdict.requeue_after)


def observed(*args, **kwargs) -> Observed:
    """Remote state of a group this resource (ml/churn) owns."""
    return Observed(*args, **{"group_owner": "ml/churn", **kwargs})


def ctx(generation: int = 1) -> Context:
    return Context(namespace="ml", name="churn", generation=generation, now=NOW)


def spec(**overrides):
    raw = {
        "provider": "sagemaker",
        "roleArn": "arn:aws:iam::123456789012:role/SageMakerExecution",
        "modelPackageGroup": {"name": "churn"},
        "staging": {"smokeTest": {"payload": "1,2,3", "maxLatencyMs": 500}},
    }
    for key, value in overrides.items():
        raw[key] = value
    return parse_spec(raw)


def version(n: int, status: str = "Approved", **metrics: float) -> ModelVersion:
    return ModelVersion(
        version=n,
        arn=f"arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/{n}",
        approval_status=status,
        metrics=metrics,
    )


def cfg(endpoint: str, v: ModelVersion, count: int = 1, capture: int = 0) -> str:
    return desired_config(endpoint, v, "ml.m5.large", count, capture)


def serving(endpoint: str, v: ModelVersion, status: str = "InService", **kw) -> Endpoint:
    return Endpoint(name=endpoint, status=status, config_name=cfg(endpoint, v), **kw)


def stage_status(endpoint: str, v: ModelVersion, smoke: bool | None = None, gen: int = 1) -> dict:
    config = cfg(endpoint, v)
    st = {
        "endpointName": endpoint,
        "endpointConfigName": config,
        "targetConfigName": config,
        "version": v.version,
        "targetVersion": v.version,
    }
    if smoke is not None:
        st["smokeTest"] = {
            "passed": smoke,
            "version": v.version,
            "configName": config,
            "generation": gen,
            "latencyMs": 12.0,
            "message": "predictions returned" if smoke else "expected 1 predictions, got 0",
        }
    return st


def cond(p, ctype):
    c = condition(p.status["conditions"], ctype)
    return c["status"], c["reason"]


def test_first_visit_creates_group_and_writes_every_condition():
    p = plan(spec(), {}, Observed(group_arn=None), ctx())
    assert p.actions == [EnsureGroup("churn", None, "ml/churn")]
    assert p.status["phase"] == "Registering"
    assert p.status["observedGeneration"] == 1
    types = [c["type"] for c in p.status["conditions"]]
    assert types == [
        "Ready",
        "Reconciling",
        "Stalled",
        "Registered",
        "Approved",
        "StagingReady",
        "ProductionReady",
    ]
    assert cond(p, "Reconciling") == ("True", "CreatingGroup")
    assert cond(p, "StagingReady")[0] == "Unknown"
    assert all(c["observedGeneration"] == 1 for c in p.status["conditions"])


def test_registers_the_artifact_when_it_changes_and_only_then():
    s = spec(model={"artifact": "s3://bucket/churn/7/model.tar.gz"})
    p = plan(s, {}, observed(group_arn=GROUP_ARN), ctx())
    assert p.actions == [RegisterVersion("s3://bucket/churn/7/model.tar.gz")]
    registered = {"registration": {"artifact": "s3://bucket/churn/7/model.tar.gz", "version": 1}}
    p = plan(s, registered, observed(GROUP_ARN, (version(1, "PendingManualApproval"),)), ctx())
    assert not any(isinstance(a, RegisterVersion) for a in p.actions)


def test_no_version_yet_waits_without_acting():
    p = plan(spec(), {}, observed(group_arn=GROUP_ARN), ctx())
    assert p.actions == []
    assert cond(p, "Registered") == ("False", "NoModelVersion")
    assert "modeldeploy register" in p.status["message"]


def test_manual_gate_waits_for_approved_version():
    p = plan(spec(), {}, observed(GROUP_ARN, (version(1, "PendingManualApproval"),)), ctx())
    assert p.actions == []
    assert p.status["phase"] == "PendingApproval"
    assert cond(p, "Ready") == ("False", "AwaitingApproval")
    assert "approvedVersion: 1" in p.status["message"]


def test_approved_version_in_spec_approves_it():
    s = spec(approval={"policy": "Manual", "approvedVersion": 1})
    v1 = version(1, "PendingManualApproval")
    p = plan(s, {}, observed(GROUP_ARN, (v1,)), ctx())
    assert len(p.actions) == 1 and isinstance(p.actions[0], SetApproval)
    assert (p.actions[0].version, p.actions[0].status) == (1, "Approved")
    assert "ml/churn" in p.actions[0].description


def test_approved_version_that_does_not_exist_is_reported():
    s = spec(approval={"policy": "Manual", "approvedVersion": 9})
    p = plan(s, {}, observed(GROUP_ARN, (version(1, "PendingManualApproval"),)), ctx())
    assert p.actions == []
    assert "approvedVersion 9 is not in churn" in p.status["message"]


@pytest.mark.parametrize(
    ("metrics", "decision"),
    [({"auc": 0.97, "accuracy": 0.93}, "Approved"), ({"auc": 0.85, "accuracy": 0.93}, "Rejected")],
)
def test_automatic_approval_follows_rules(metrics, decision):
    s = spec(
        approval={
            "policy": "Automatic",
            "rules": [{"metric": "auc", "min": 0.9}, {"metric": "accuracy", "min": 0.9}],
        }
    )
    p = plan(s, {}, observed(GROUP_ARN, (version(3, "PendingManualApproval", **metrics),)), ctx())
    assert [a.status for a in p.actions] == [decision]
    if decision == "Rejected":
        assert "auc 0.85 >= 0.9" in p.actions[0].description


def test_rule_on_missing_metric_rejects_with_its_name():
    passed, text = evaluate_rules([ApprovalRule(metric="f1", min=0.5)], {"auc": 0.99})
    assert not passed and "f1" in text and "missing" in text


def test_first_approved_version_creates_staging():
    v1 = version(1)
    p = plan(spec(), {}, observed(GROUP_ARN, (v1,)), ctx())
    (deploy,) = p.actions
    assert isinstance(deploy, DeployEndpoint)
    assert (deploy.stage, deploy.request.endpoint_name, deploy.update) == (
        "staging",
        STAGING,
        False,
    )
    assert deploy.request.config_name == cfg(STAGING, v1)
    assert p.status["phase"] == "DeployingStaging"
    assert p.status["staging"]["targetVersion"] == 1
    assert p.requeue_after == 1.0


def test_creating_endpoint_polls_without_acting():
    v1 = version(1)
    status = {"staging": {**stage_status(STAGING, v1), "endpointConfigName": ""}}
    obs = observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1, status="Creating"))
    p = plan(spec(), status, obs, ctx())
    assert p.actions == []
    assert p.status["phase"] == "DeployingStaging"
    assert cond(p, "Reconciling") == ("True", "DeployingStaging")
    assert p.requeue_after == 30.0


def test_in_service_staging_runs_smoke_test_then_waits_for_promotion():
    v1 = version(1)
    status = {"staging": stage_status(STAGING, v1)}
    obs = observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1))
    p = plan(spec(), status, obs, ctx())
    assert [type(a) for a in p.actions] == [SmokeTest]
    assert p.status["phase"] == "Testing"
    status["staging"] = stage_status(STAGING, v1, smoke=True)
    p = plan(spec(), status, obs, ctx())
    assert p.actions == []
    assert p.status["phase"] == "AwaitingPromotion"
    assert cond(p, "Ready") == ("False", "AwaitingPromotion")
    assert cond(p, "StagingReady") == ("True", "SmokeTestPassed")
    assert "promotedVersion: 1" in p.status["message"]


def test_promoted_version_creates_production_and_then_is_ready():
    v1 = version(1)
    s = spec(production={"promotedVersion": 1})
    status = {"staging": stage_status(STAGING, v1, smoke=True)}
    obs = observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1))
    p = plan(s, status, obs, ctx())
    (deploy,) = p.actions
    assert (deploy.stage, deploy.request.endpoint_name, deploy.version) == ("production", PROD, 1)
    status["production"] = stage_status(PROD, v1)
    obs = observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1), production=serving(PROD, v1))
    p = plan(s, status, obs, ctx())
    assert p.actions == []
    assert p.status["phase"] == "Deployed"
    assert cond(p, "Ready") == ("True", "Deployed")
    assert cond(p, "Reconciling")[0] == "False" and cond(p, "Stalled")[0] == "False"
    assert p.requeue_after == 600.0


def test_new_version_while_production_serves_older_one():
    v1, v2 = version(1), version(2, "PendingManualApproval")
    s = spec(production={"promotedVersion": 1})
    status = {
        "staging": stage_status(STAGING, v1, smoke=True),
        "production": stage_status(PROD, v1),
    }
    obs = observed(GROUP_ARN, (v2, v1), staging=serving(STAGING, v1), production=serving(PROD, v1))
    p = plan(s, status, obs, ctx())
    assert p.actions == []
    assert p.status["phase"] == "PendingApproval"
    # Production still serves what git asks for.
    assert cond(p, "Ready")[0] == "True"
    assert p.status["latestVersion"]["version"] == 2
    # Once approved, staging moves to version 2 and production stays on 1.
    v2 = version(2)
    obs = observed(GROUP_ARN, (v2, v1), staging=serving(STAGING, v1), production=serving(PROD, v1))
    p = plan(s, status, obs, ctx())
    (deploy,) = p.actions
    assert (deploy.stage, deploy.version, deploy.update) == ("staging", 2, True)


def test_rejected_version_leaves_production_alone():
    v1, v2 = version(1), version(2, "Rejected")
    s = spec(production={"promotedVersion": 1})
    status = {
        "staging": stage_status(STAGING, v1, smoke=True),
        "production": stage_status(PROD, v1),
    }
    obs = observed(GROUP_ARN, (v2, v1), staging=serving(STAGING, v1), production=serving(PROD, v1))
    p = plan(s, status, obs, ctx())
    assert p.actions == []
    assert p.status["phase"] == "Rejected"
    assert p.status["production"]["version"] == 1
    assert cond(p, "Approved") == ("False", "Rejected")
    assert cond(p, "Ready")[0] == "True"


def test_rejected_first_version_stalls_with_nothing_deployed():
    s = spec(approval={"policy": "Automatic", "rules": [{"metric": "auc", "min": 0.99}]})
    v1 = ModelVersion(1, "arn:1", "Rejected", approval_description="rejected by rule auc")
    p = plan(s, {}, observed(GROUP_ARN, (v1,)), ctx())
    assert p.actions == []
    assert p.status["phase"] == "Rejected"
    assert cond(p, "Stalled")[0] == "True"
    assert cond(p, "Ready") == ("False", "Rejected")


def failed_staging(v: ModelVersion) -> tuple[dict, Observed]:
    status = {"staging": {**stage_status(STAGING, v), "endpointConfigName": ""}}
    endpoint = Endpoint(STAGING, "Failed", cfg(STAGING, v), failure_reason="image not found")
    return status, observed(GROUP_ARN, (v,), staging=endpoint)


def test_failed_staging_deployment_is_terminal_for_that_input():
    status, obs = failed_staging(version(1))
    p = plan(spec(), status, obs, ctx(generation=1))
    assert p.actions == []
    assert p.status["phase"] == "Failed"
    assert cond(p, "Stalled") == ("True", "DeploymentFailed")
    assert "image not found" in p.status["message"]
    assert [e.reason for e in p.events if e.type == "Warning"] == ["DeploymentFailed"]
    # The next passes at the same generation do nothing and stay quiet.
    again = plan(spec(), p.status, obs, ctx(generation=1))
    assert again.actions == [] and cond(again, "Stalled")[0] == "True"
    assert not [e for e in again.events if e.type == "Warning"]


def test_failed_staging_is_retried_only_when_the_spec_changes():
    status, obs = failed_staging(version(1))
    stalled = plan(spec(), status, obs, ctx(generation=1)).status
    p = plan(spec(), stalled, obs, ctx(generation=2))
    assert p.actions == [DeleteEndpoint("staging", STAGING)]
    assert "stalled" not in p.status


def test_failed_update_keeps_old_config_serving_and_stalls():
    v1, v2 = version(1), version(2)
    status = {
        "staging": {
            **stage_status(STAGING, v1, smoke=True),
            "targetConfigName": cfg(STAGING, v2),
            "targetVersion": 2,
        }
    }
    endpoint = Endpoint(STAGING, "InService", cfg(STAGING, v1), failure_reason="ping failed")
    p = plan(spec(), status, observed(GROUP_ARN, (v2, v1), staging=endpoint), ctx())
    assert p.actions == []
    assert cond(p, "Stalled") == ("True", "DeploymentFailed")
    assert p.status["staging"]["version"] == 1


def test_failed_smoke_test_stalls_and_blocks_promotion():
    v1 = version(1)
    s = spec(production={"promotion": "Automatic"})
    status = {"staging": stage_status(STAGING, v1, smoke=False)}
    obs = observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1))
    p = plan(s, status, obs, ctx())
    assert p.actions == []
    assert cond(p, "Stalled") == ("True", "SmokeTestFailed")
    # A spec change reruns the test.
    p = plan(s, status, obs, ctx(generation=2))
    assert [type(a) for a in p.actions] == [SmokeTest]


def test_automatic_promotion_after_smoke_test():
    v1 = version(1)
    s = spec(production={"promotion": "Automatic"})
    status = {"staging": stage_status(STAGING, v1, smoke=True)}
    p = plan(s, status, observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1)), ctx())
    (deploy,) = p.actions
    assert (deploy.stage, deploy.version) == ("production", 1)
    assert p.status["phase"] == "Promoting"


def test_manual_promotion_of_untested_version_waits():
    v1 = version(1)
    s = spec(production={"promotedVersion": 1})
    status = {"staging": stage_status(STAGING, v1)}
    p = plan(s, status, observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1)), ctx())
    assert [type(a) for a in p.actions] == [SmokeTest]


def test_rollback_by_promoted_version():
    v1, v2 = version(1), version(2)
    s = spec(production={"promotedVersion": 1})
    status = {
        "staging": stage_status(STAGING, v2, smoke=True),
        "production": {**stage_status(PROD, v2), "previousVersion": 1},
    }
    obs = observed(GROUP_ARN, (v2, v1), staging=serving(STAGING, v2), production=serving(PROD, v2))
    p = plan(s, status, obs, ctx())
    (deploy,) = p.actions
    assert (deploy.stage, deploy.version, deploy.update) == ("production", 1, True)
    assert cond(p, "Ready")[0] == "False"
    # Once production settles on version 1, the version it left is the one to go back to.
    obs = observed(GROUP_ARN, (v2, v1), staging=serving(STAGING, v2), production=serving(PROD, v1))
    p = plan(s, p.status, obs, ctx())
    assert p.status["production"]["version"] == 1
    assert p.status["production"]["previousVersion"] == 2
    assert cond(p, "Ready")[0] == "True"
    # The version a person just moved production off is not offered back, from the first pass
    # that sees version 1 serve (not one resync later: `make gitops-e2e` caught that).
    assert p.status["phase"] == "Deployed", p.status["message"]
    assert "promotedVersion: 2" not in p.status["message"]


def test_promotion_records_previous_version():
    v1, v2 = version(1), version(2)
    s = spec(production={"promotedVersion": 2})
    status = {
        "staging": stage_status(STAGING, v2, smoke=True),
        "production": stage_status(PROD, v1),
    }
    obs = observed(GROUP_ARN, (v2, v1), staging=serving(STAGING, v2), production=serving(PROD, v1))
    p = plan(s, status, obs, ctx())
    assert p.status["production"]["targetVersion"] == 2
    assert "previousVersion" not in p.status["production"]  # not before version 2 serves
    # A failed update leaves version 1 serving and the rollback pointer untouched.
    failed = Endpoint(PROD, "InService", cfg(PROD, v1), failure_reason="health check failed")
    stuck = plan(s, p.status, observed(GROUP_ARN, (v2, v1), production=failed), ctx())
    assert stuck.status["production"]["version"] == 1
    assert "previousVersion" not in stuck.status["production"]
    settled = observed(
        GROUP_ARN, (v2, v1), staging=serving(STAGING, v2), production=serving(PROD, v2)
    )
    p = plan(s, p.status, settled, ctx())
    assert p.status["production"]["version"] == 2
    assert p.status["production"]["previousVersion"] == 1


def test_promoting_a_rejected_version_is_blocked():
    v1, v2 = version(1), version(2, "Rejected")
    s = spec(production={"promotedVersion": 2})
    status = {
        "staging": stage_status(STAGING, v1, smoke=True),
        "production": stage_status(PROD, v1),
    }
    obs = observed(GROUP_ARN, (v2, v1), staging=serving(STAGING, v1), production=serving(PROD, v1))
    p = plan(s, status, obs, ctx())
    assert p.actions == []
    assert cond(p, "Ready")[0] == "False"
    assert (
        "is Rejected, not Approved"
        in condition(p.status["conditions"], "ProductionReady")["message"]
    )


def test_instance_count_change_is_a_new_config():
    v1 = version(1)
    s = spec(production={"promotedVersion": 1, "instanceCount": 2})
    status = {
        "staging": stage_status(STAGING, v1, smoke=True),
        "production": stage_status(PROD, v1),
    }
    obs = observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1), production=serving(PROD, v1))
    (deploy,) = plan(s, status, obs, ctx()).actions
    assert deploy.update and deploy.request.instance_count == 2
    assert deploy.request.config_name == cfg(PROD, v1, count=2) != cfg(PROD, v1)


def test_steady_state_is_a_fixed_point():
    v1 = version(1)
    s = spec(production={"promotedVersion": 1})
    status = {
        "staging": stage_status(STAGING, v1, smoke=True),
        "production": stage_status(PROD, v1),
    }
    obs = observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1), production=serving(PROD, v1))
    first = plan(s, status, obs, ctx())
    second = plan(s, first.status, obs, ctx())
    assert first.actions == second.actions == []
    assert first.status == second.status
    assert second.events == []


def test_last_transition_time_moves_only_on_change():
    early = plan(spec(), {}, Observed(group_arn=None), ctx())
    later_ctx = Context("ml", "churn", 1, datetime(2026, 11, 26, 13, 0, tzinfo=UTC))
    again = plan(spec(), early.status, Observed(group_arn=None), later_ctx)
    assert condition(again.status["conditions"], "Ready")["lastTransitionTime"] == (
        "2026-11-26T12:00:00Z"
    )
    moved = plan(
        spec(), early.status, observed(GROUP_ARN, (version(1, "PendingManualApproval"),)), later_ctx
    )
    assert condition(moved.status["conditions"], "Registered")["lastTransitionTime"] == (
        "2026-11-26T13:00:00Z"
    )


def test_action_failure_stalls_until_generation_changes():
    s = spec(model={"artifact": "s3://bucket/a/model.tar.gz"})
    status = {
        "stalled": {
            "key": "register:s3://bucket/a/model.tar.gz",
            "generation": 1,
            "reason": "RegistrationFailed",
            "message": "written by xgboost 3.2.0",
            "source": "action",
        }
    }
    p = plan(s, status, observed(GROUP_ARN), ctx(1))
    assert p.actions == [] and p.status["phase"] == "Failed"
    assert cond(p, "Registered") == ("False", "RegistrationFailed")
    p = plan(s, status, observed(GROUP_ARN), ctx(2))
    assert p.actions == [RegisterVersion("s3://bucket/a/model.tar.gz")]
    assert "stalled" not in p.status


def test_after_rollback_the_version_rolled_back_from_is_not_offered_again():
    v1, v2 = version(1), version(2)
    s = spec(production={"promotedVersion": 1})
    status = {
        "staging": stage_status(STAGING, v2, smoke=True),
        "production": {**stage_status(PROD, v1), "previousVersion": 2},
    }
    obs = observed(GROUP_ARN, (v2, v1), staging=serving(STAGING, v2), production=serving(PROD, v1))
    p = plan(s, status, obs, ctx())
    assert p.actions == []
    assert p.status["phase"] == "Deployed"
    assert cond(p, "Ready") == ("True", "Deployed")
    # A newer version than both is offered as usual.
    v3 = version(3)
    status["staging"] = stage_status(STAGING, v3, smoke=True)
    obs = observed(
        GROUP_ARN, (v3, v2, v1), staging=serving(STAGING, v3), production=serving(PROD, v1)
    )
    p = plan(s, status, obs, ctx())
    assert p.status["phase"] == "AwaitingPromotion"
    assert "promotedVersion: 3" in p.status["message"]


def test_a_terminal_action_failure_blocks_only_that_input():
    v1, v2 = version(1, "PendingManualApproval"), version(2, "PendingManualApproval")
    s = spec(approval={"policy": "Manual", "approvedVersion": 1})
    status = {
        "stalled": {
            "key": "approval:1",
            "generation": 1,
            "reason": "ApprovalFailed",
            "message": "AccessDenied",
            "source": "action",
        }
    }
    p = plan(s, status, observed(GROUP_ARN, (v1,)), ctx())
    assert p.actions == [] and p.status["phase"] == "Failed"
    assert cond(p, "Stalled") == ("True", "ApprovalFailed")
    # Another input goes ahead in the same generation, and the old stall record goes.
    s2 = spec(approval={"policy": "Manual", "approvedVersion": 2})
    p = plan(s2, status, observed(GROUP_ARN, (v2, v1)), ctx())
    assert [a.version for a in p.actions] == [2]
    assert "stalled" not in p.status


def test_lost_registry_registers_again():
    s = spec(model={"artifact": "s3://bucket/a/model.tar.gz"})
    status = {"registration": {"artifact": "s3://bucket/a/model.tar.gz", "version": 3}}
    p = plan(s, status, observed(GROUP_ARN, ()), ctx())
    assert p.actions == [RegisterVersion("s3://bucket/a/model.tar.gz")]
    # A new serving image is a new registration too.
    s = spec(model={"artifact": "s3://bucket/a/model.tar.gz", "frameworkVersion": "3.0-5"})
    p = plan(s, status, observed(GROUP_ARN, (version(3),)), ctx())
    assert p.actions == [RegisterVersion("s3://bucket/a/model.tar.gz")]


@pytest.mark.parametrize("state", ["OutOfService", "UpdateRollbackFailed"])
def test_endpoint_states_that_do_not_recover_stall(state):
    v1 = version(1)
    status = {"staging": {**stage_status(STAGING, v1), "endpointConfigName": ""}}
    endpoint = Endpoint(STAGING, state, cfg(STAGING, v1), failure_reason="broken")
    p = plan(spec(), status, observed(GROUP_ARN, (v1,), staging=endpoint), ctx())
    assert p.actions == []
    assert cond(p, "Stalled") == ("True", "DeploymentFailed")


def test_repairing_endpoint_is_degraded_not_redeployed():
    v1 = version(1)
    s = spec(production={"promotedVersion": 1})
    status = {
        "staging": stage_status(STAGING, v1, smoke=True),
        "production": stage_status(PROD, v1),
    }
    repairing = Endpoint(PROD, "SystemUpdating", cfg(PROD, v1), failure_reason="process exited")
    obs = observed(GROUP_ARN, (v1,), staging=serving(STAGING, v1), production=repairing)
    p = plan(s, status, obs, ctx())
    assert p.actions == [] and p.status["phase"] == "Deployed"
    assert [e.reason for e in p.events if e.type == "Warning"] == ["EndpointRepairing"]


def test_endpoint_deleted_outside_is_recreated_and_tested_again():
    v1 = version(1)
    status = {"staging": stage_status(STAGING, v1, smoke=True)}
    p = plan(spec(), status, observed(GROUP_ARN, (v1,)), ctx())
    (deploy,) = p.actions
    assert deploy.stage == "staging" and not deploy.update
    assert "smokeTest" not in p.status["staging"]
    assert [e.reason for e in p.events if e.type == "Warning"] == ["EndpointMissing"]


def test_remote_changes_made_by_others_are_events():
    v1 = version(1, "PendingManualApproval")
    first = plan(spec(), {}, observed(GROUP_ARN, (v1,)), ctx())
    approved_elsewhere = plan(spec(), first.status, observed(GROUP_ARN, (version(1),)), ctx())
    assert ("ApprovalChanged", "version 1 is now Approved") in [
        (e.reason, e.message) for e in approved_elsewhere.events
    ]
    newer = plan(
        spec(), approved_elsewhere.status, observed(GROUP_ARN, (version(2), version(1))), ctx()
    )
    assert "NewVersion" in [e.reason for e in newer.events]


def test_a_rejection_in_the_spec_is_recorded_in_the_registry_with_its_reason():
    rejected = {"approvedVersion": 1, "rejectedVersions": [{"version": 2, "reason": "drift"}]}
    s = spec(approval=rejected)
    remote = observed(GROUP_ARN, (version(2), version(1)))
    p = plan(s, {}, remote, ctx())
    assert p.actions == [
        SetApproval(
            2,
            version(2).arn,
            "Rejected",
            "drift (spec.approval.rejectedVersions of ModelDeployment ml/churn)",
        )
    ]
    assert cond(p, "Approved") == ("False", "Approving")
    # Once the registry says Rejected, nothing more is asked, and staging serves version 1.
    done = observed(GROUP_ARN, (version(2, "Rejected"), version(1)))
    p = plan(s, p.status, done, ctx())
    assert not [a for a in p.actions if isinstance(a, SetApproval)]
    deploy = next(a for a in p.actions if isinstance(a, DeployEndpoint))
    assert (deploy.stage, deploy.version) == ("staging", 1)


def test_a_rejection_applies_under_automatic_approval_too():
    s = spec(
        approval={
            "policy": "Automatic",
            "rules": [{"metric": "auc", "min": 0.5}],
            "rejectedVersions": [{"version": 1, "reason": "leaked labels"}],
        }
    )
    p = plan(s, {}, observed(GROUP_ARN, (version(1, auc=0.99),)), ctx())
    assert [(a.version, a.status) for a in p.actions] == [(1, "Rejected")]


def test_status_lists_the_newest_versions_and_keeps_metrics_seen_once():
    first = plan(spec(), {}, observed(GROUP_ARN, (version(1, auc=0.9),)), ctx())
    assert first.status["versions"] == [
        {"version": 1, "approvalStatus": "Approved", "metrics": {"auc": 0.9}}
    ]
    # A provider that lists versions without metrics (SageMaker) does not lose what was seen.
    listed = tuple(
        version(n, "PendingManualApproval" if n == 12 else "Approved") for n in range(12, 0, -1)
    )
    later = plan(spec(), first.status, observed(GROUP_ARN, listed), ctx())
    shown = later.status["versions"]
    assert [v["version"] for v in shown] == list(range(12, 2, -1))  # the newest ten
    assert shown[0]["approvalStatus"] == "PendingManualApproval"
    first_again = plan(spec(), first.status, observed(GROUP_ARN, (version(2), version(1))), ctx())
    assert first_again.status["versions"][1] == {
        "version": 1,
        "approvalStatus": "Approved",
        "metrics": {"auc": 0.9},
    }


# -- ownership of the group ------------------------------------------------------------------------


def test_a_group_another_resource_owns_stalls_naming_the_owner():
    remote = observed(GROUP_ARN, (version(1, "PendingManualApproval"),), group_owner="team-a/churn")
    s = spec(approval={"approvedVersion": 1}, model={"artifact": "s3://bucket/churn/model.tar.gz"})
    p = plan(s, {}, remote, ctx())
    assert p.actions == []  # no registration into it, no approval of its versions
    assert p.status["phase"] == "Failed"
    assert cond(p, "Stalled") == ("True", "GroupOwnedElsewhere")
    assert "belongs to ModelDeployment team-a/churn" in p.status["message"]
    assert [e.reason for e in p.events if e.type == "Warning"] == ["GroupOwnedElsewhere"]
    again = plan(s, p.status, remote, ctx())
    assert not [e for e in again.events if e.type == "Warning"]  # one Event, not one a pass


def test_an_unowned_group_is_adopted_only_when_the_spec_says_so():
    remote = observed(GROUP_ARN, (version(1, "PendingManualApproval"),), group_owner="")
    p = plan(spec(), {}, remote, ctx())
    assert p.actions == []
    assert cond(p, "Stalled") == ("True", "GroupNotAdopted")
    assert "spec.modelPackageGroup.adopt: true" in p.status["message"]
    adopting = spec(modelPackageGroup={"name": "churn", "adopt": True})
    p = plan(adopting, p.status, remote, ctx(2))
    assert p.actions == [ClaimGroup(GROUP_ARN, "ml/churn")]
    assert cond(p, "Reconciling") == ("True", "AdoptingGroup")
    # Once the registry names this resource, the pipeline goes on (here: to the approval gate).
    owned = plan(
        adopting, p.status, observed(GROUP_ARN, (version(1, "PendingManualApproval"),)), ctx(2)
    )
    assert owned.status["modelPackageGroup"]["owner"] == "ml/churn"
    assert owned.status["phase"] == "PendingApproval"
