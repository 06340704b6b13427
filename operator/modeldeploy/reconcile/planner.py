"""The reconciler's brain: a pure function of (spec, status, observed remote state).

`plan()` is a list of named steps, each a small pure function in a module named for its job.
It performs no I/O and reads no clock (the caller passes `now`), so every transition is a
table test away. One pass moves each part of the pipeline at most one step; the caller
requeues soon after any mutating action and re-observes, so a restart anywhere resumes from
the remote state and status. The verdict is written into status once, by `finalize`, after
the actions ran.
"""

from __future__ import annotations

from modeldeploy.reconcile import project, project_gate
from modeldeploy.reconcile.actions import action_key
from modeldeploy.reconcile.finalize import stall_message
from modeldeploy.reconcile.gates import decide_approval, newest_approved, promotion
from modeldeploy.reconcile.pass_state import PassState
from modeldeploy.reconcile.reasons import Phase, Reason
from modeldeploy.reconcile.registration import (
    check_owner,
    ensure_group,
    record_latest,
    register_model,
)
from modeldeploy.reconcile.smoke import decide_smoke
from modeldeploy.reconcile.stages import plan_stage
from modeldeploy.reconcile.summary import summarize
from modeldeploy.reconcile.types import DEFAULT_TIMING, Context, Plan, Timing, Verdict
from modeldeploy.remote import Observed
from modeldeploy.spec import ModelDeploymentSpec
from modeldeploy.status import ModelDeploymentStatus

# Steps that may end the pass early: nothing downstream moves until they are satisfied.
GATES = (ensure_group, check_owner, register_model, record_latest, decide_approval)
PROJECT_GATES = (*GATES[:-1], project_gate.reject_at_gate, decide_approval)


def plan(
    spec: ModelDeploymentSpec,
    status: ModelDeploymentStatus,
    observed: Observed,
    ctx: Context,
    timing: Timing = DEFAULT_TIMING,
) -> Plan:
    s = PassState.start(spec, status, observed, ctx, timing)
    for gate in PROJECT_GATES if spec.project else GATES:
        if verdict := gate(s):
            return _finish(s, verdict)
    if spec.project is not None:  # a project's pipeline deploys: the operator decides its gate
        if verdict := project.ensure_project(s):
            return _finish(s, verdict)
        project.deploy_staging(s)
        s.smoke = decide_smoke(s)
        project_gate.deploy_production(s)
        return _finish(s, summarize(s))
    deploy_staging(s)
    s.smoke = decide_smoke(s)
    deploy_production(s)
    return _finish(s, summarize(s))


def deploy_staging(s: PassState) -> None:
    """Staging serves the newest approved version."""
    s.candidate = newest_approved(s.observed)
    staging = s.spec.staging
    s.staging = plan_stage(
        s,
        "staging",
        s.candidate,
        capture=staging.dataCapturePercent,
        capture_destination=staging.dataCaptureDestination,
    )


def deploy_production(s: PassState) -> None:
    """Production serves the promoted version, once it passed staging."""
    assert s.smoke is not None
    s.promotion = promotion(s, s.candidate, s.smoke.passed)
    s.production = plan_stage(s, "production", s.promotion.target)


def _finish(s: PassState, verdict: Verdict) -> Plan:
    """Hold back an action that failed terminally in this generation: only that input stalls,
    everything else goes on."""
    held = s.held
    if held and any(action_key(a) == held.key for a in s.actions):
        s.actions = [a for a in s.actions if action_key(a) != held.key]
        if held.reason == Reason.REGISTRATION_FAILED:
            s.conds.set("Registered", False, held.reason, stall_message(held))
        verdict = Verdict(Phase.FAILED, held.message, s.conds, s.timing.resync, stall=held)
    elif held and s.new.stalled == held:
        s.new.stalled = None  # the failed input is no longer wanted
    verdict.conditions.default(verdict.phase or "", verdict.message)
    if s.actions:
        verdict.requeue_after = s.timing.act
    return Plan(s.actions, s.new, verdict, s.events)
