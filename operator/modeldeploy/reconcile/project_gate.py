"""Project mode's gate: the pipeline's DeployStaging/ApproveDeployment, decided from the spec.

promotedVersion approves the run that deployed that version to staging, once the smoke test
passed; rejectedVersions rejects it with the spec's reason; Automatic promotion approves after
the smoke test. A decision is made once per run; a decision made without the operator (the
console) and a run superseded while it waited are reported as Events.
"""

from __future__ import annotations

from modeldeploy.reconcile.actions import DecideGate
from modeldeploy.reconcile.gates import Promotion
from modeldeploy.reconcile.pass_state import PassState
from modeldeploy.reconcile.project import project_stage
from modeldeploy.reconcile.reasons import Reason
from modeldeploy.reconcile.types import Event
from modeldeploy.remote import GATE_ACTION, STAGING_STAGE, GateDecision, ModelVersion, Project
from modeldeploy.status import GateStatus

OPERATOR = "modeldeploy"  # how the operator signs the gate decisions it records


def deploy_production(s: PassState) -> None:
    """Production serves what the pipeline deployed after its gate; decide the gate."""
    project = s.observed.project
    assert project is not None and s.smoke is not None
    s.production = project_stage(s, "production")
    prod = s.new.production
    current = s.version(prod.version if prod else None)
    _note_gate_history(s, project)
    gate, staged = project.gate, s.candidate
    stage = project.stage(STAGING_STAGE)
    run = stage.execution_id if stage else ""
    blocked = waiting_text = ""
    if gate and gate.status == "InProgress" and gate.token and staged and not _decided(s, run):
        approve, blocked, waiting_text = _gate_wish(s, staged.version, current)
        if approve is not None:
            summary = _summary(s, staged.version, approve)
            decision = GateDecision(
                project.name, project.pipeline, run, gate.token, approve, summary
            )
            s.actions.append(DecideGate(decision, staged.version))
            s.production.state = "deploying"
            verb = "approving" if approve else "rejecting"
            s.production.message = (
                f"{verb} the pipeline's {GATE_ACTION} for version {staged.version} (run {run})"
            )
    elif (approved := _approved(s, run)) and approved != (current and current.version):
        if s.production.state in ("absent", "serving"):  # before DeployProd reports
            s.production.state = "deploying"
            s.production.message = (
                f"the pipeline deploys version {approved} to production (run {run}), "
                f"approved at its {GATE_ACTION}"
            )
    elif s.spec.production.promotedVersion not in (None, current and current.version):
        blocked = (
            f"spec.production.promotedVersion {s.spec.production.promotedVersion}: production "
            f"serves {current.version if current else 'nothing'}; in project mode a version "
            f"reaches production when a pipeline run that deployed it to staging waits at "
            f"{GATE_ACTION}"
        )
    s.promotion = Promotion(current, blocked, waiting_text)


def reject_at_gate(s: PassState) -> None:
    """A version spec.approval.rejectedVersions names is rejected at the gate, with the spec's
    reason, in the same pass as in the registry (the registry's rejection starts a run that
    would otherwise supersede this one without a word at its gate)."""
    project = s.observed.project
    if s.spec.project is None or project is None or project.owner != s.ctx.owner:
        return None
    gate, stage, staging = project.gate, project.stage(STAGING_STAGE), project.staging
    run = stage.execution_id if stage else ""
    staged = staging.served_version if staging else None
    waiting = gate is not None and gate.status == "InProgress" and bool(gate.token)
    recorded = s.old.project.gate if s.old.project else None
    if not waiting or staged is None or (recorded and recorded.executionId == run):
        return None
    if staged in {r.version for r in s.spec.approval.rejectedVersions}:
        assert gate is not None
        summary = _summary(s, staged, False)
        decision = GateDecision(project.name, project.pipeline, run, gate.token, False, summary)
        s.actions.append(DecideGate(decision, staged))
    return None


def _approved(s: PassState, run: str) -> int | None:
    """The version this run's gate was approved for, as recorded."""
    recorded = s.new.project.gate if s.new.project else None
    if recorded and recorded.executionId == run and recorded.decision == "Approved":
        return recorded.version
    return None


def _decided(s: PassState, run: str) -> bool:
    """The operator decided this run's gate already (the pipeline may not show it yet), or
    does so in this pass."""
    recorded = s.new.project.gate if s.new.project else None
    deciding = any(isinstance(a, DecideGate) and a.decision.execution_id == run for a in s.actions)
    return deciding or (recorded is not None and recorded.executionId == run)


def _gate_wish(
    s: PassState, staged: int, current: ModelVersion | None
) -> tuple[bool | None, str, str]:
    """(approve, reject or None to wait; why it is blocked; what a person may do)."""
    rejected = {r.version for r in s.spec.approval.rejectedVersions}
    if staged in rejected:
        return False, "", ""
    assert s.smoke is not None
    if not s.smoke.passed:
        return None, "", ""
    prod = s.spec.production
    if prod.promotion == "Automatic" or prod.promotedVersion == staged:
        return True, "", ""
    offer = (
        f"version {staged} passed staging and waits at the pipeline's {GATE_ACTION}: set "
        f"spec.production.promotedVersion: {staged} to approve it"
    )
    if prod.promotedVersion is None or (current and current.version == prod.promotedVersion):
        return None, "", offer
    blocked = (
        f"spec.production.promotedVersion is {prod.promotedVersion}, but the pipeline run "
        f"waiting at {GATE_ACTION} deployed version {staged} to staging: the gate is approved "
        f"only for the version it deployed (set promotedVersion: {staged}, or reject it in "
        "spec.approval.rejectedVersions)"
    )
    return None, blocked, ""


def _summary(s: PassState, version: int, approve: bool) -> str:
    by = f"ModelDeployment {s.ctx.namespace}/{s.ctx.name}"
    if not approve:
        reason = next(r.reason for r in s.spec.approval.rejectedVersions if r.version == version)
        return f"{reason} (spec.approval.rejectedVersions of {by})"
    smoke = s.smoke.message if s.smoke and s.smoke.message else "staging is in service"
    if s.spec.production.promotion == "Automatic":
        return f"version {version}: {smoke} (Automatic promotion of {by})"
    return f"version {version}: {smoke} (spec.production.promotedVersion of {by})"


def _waited_before(s: PassState, run: str) -> bool:
    """The last pass saw this run's ApproveDeployment waiting. (A finished approval in
    GetPipelineState may belong to an earlier run while the stage runs a new one: only a
    transition seen from InProgress says that this run's gate was decided.)"""
    stages = s.old.project.stages if s.old.project else None
    stage = next((st for st in stages or [] if st.name == STAGING_STAGE), None)
    if stage is None or stage.executionId != run:
        return False
    gate = next((a for a in stage.actions if a.name == GATE_ACTION), None)
    return gate is not None and gate.status == "InProgress"


def _note_gate_history(s: PassState, project: Project) -> None:
    """Events for what happened at the gate without the operator: a person's decision in the
    console, a run superseded while it waited."""
    gate, stage = project.gate, project.stage(STAGING_STAGE)
    run = stage.execution_id if stage else ""
    assert s.new.project is not None
    recorded = s.new.project.gate
    decided = gate is not None and gate.status in ("Succeeded", "Failed") and bool(run)
    ours = recorded is not None and recorded.executionId == run
    if decided and not ours and _waited_before(s, run):
        assert gate is not None
        decision = "Approved" if gate.status == "Succeeded" else "Rejected"
        by = gate.updated_by or "someone outside modeldeploy"
        record = GateStatus(
            executionId=run,
            version=s.candidate.version if s.candidate else None,
            decision=decision,
            summary=gate.summary or None,
            by=by,
        )
        s.new.project = s.new.project.model_copy(update={"gate": record})
        if by != OPERATOR:
            text = f"{GATE_ACTION} of run {run} was {decision.lower()} by {by}: {gate.summary}"
            s.events.append(Event("Normal", Reason.GATE_DECIDED, text))
    seen = s.old.project.execution if s.old.project else None
    if seen and seen.status == "InProgress":
        now = project.execution(seen.id)
        if now and now.status == "Superseded":
            text = f"pipeline run {seen.id} was superseded by a newer run before it finished"
            s.events.append(Event("Warning", Reason.RUN_SUPERSEDED, text))
