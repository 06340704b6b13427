"""The last planner step: conditions and phase from what the stages report, most urgent first."""

from __future__ import annotations

from modeldeploy.reconcile.actions import stall_key
from modeldeploy.reconcile.pass_state import PassState
from modeldeploy.reconcile.reasons import Phase, Reason
from modeldeploy.reconcile.types import Verdict
from modeldeploy.remote import PENDING, REJECTED
from modeldeploy.status import StallStatus


def _stall(s: PassState) -> StallStatus | None:
    """A failed deployment of either stage, else a failed smoke test, stalls the pass."""
    assert s.staging and s.production and s.smoke
    stall = s.staging.stall or s.production.stall
    if stall is None and s.smoke.state == "failed":
        staging = s.new.staging
        stall = StallStatus(
            key=stall_key("smoke", staging.endpointConfigName if staging else None),
            generation=s.ctx.generation,
            reason=Reason.SMOKE_TEST_FAILED,
            message=s.smoke.message,
        )
    return stall


def _staging_ready(s: PassState) -> None:
    assert s.staging and s.smoke
    candidate, smoke = s.candidate, s.smoke
    if candidate and smoke.passed:
        reason = Reason.SMOKE_TEST_PASSED if s.spec.staging.smokeTest else Reason.IN_SERVICE
        detail = f"; {smoke.message}" if smoke.message else ""
        message = f"staging serves version {candidate.version}{detail}"
        s.conds.set("StagingReady", True, reason, message)
        return
    reason = {"stalled": Reason.DEPLOYMENT_FAILED, "deploying": Reason.DEPLOYING}.get(
        s.staging.state
    ) or {"failed": Reason.SMOKE_TEST_FAILED, "running": Reason.TESTING}.get(smoke.state)
    message = s.staging.message or smoke.message or "no approved version to deploy"
    s.conds.set("StagingReady", False, reason or Reason.NO_APPROVED_VERSION, message)


def _production_ready(s: PassState) -> bool:
    """Set ProductionReady; True when production serves the promotion's target."""
    assert s.production and s.promotion
    target, blocked, waiting = s.promotion.target, s.promotion.blocked, s.promotion.waiting
    serving_target = target is not None and s.production.state == "serving"
    if serving_target and not blocked:
        message = f"production serves version {target.version}"  # type: ignore[union-attr]
        s.conds.set("ProductionReady", True, Reason.IN_SERVICE, message)
    else:
        reason = {"stalled": Reason.DEPLOYMENT_FAILED, "deploying": Reason.PROMOTING}.get(
            s.production.state
        ) or (Reason.PROMOTION_BLOCKED if blocked else Reason.AWAITING_PROMOTION)
        message = s.production.message or blocked or waiting or "nothing promoted yet"
        s.conds.set("ProductionReady", False, reason, message)
    return serving_target


def _phase(s: PassState, serving_target: bool) -> tuple[Phase, str]:
    assert s.staging and s.smoke and s.production and s.promotion
    latest = s.observed.latest
    assert latest is not None
    blocked, waiting = s.promotion.blocked, s.promotion.waiting
    if s.staging.state == "deploying":
        return Phase.DEPLOYING_STAGING, s.staging.message
    if s.smoke.state == "running":
        return Phase.TESTING, s.smoke.message
    if s.production.state == "deploying":
        return Phase.PROMOTING, s.production.message
    if latest.approval_status == PENDING:
        return Phase.PENDING_APPROVAL, s.conds.message("Approved")
    if latest.approval_status == REJECTED:
        return Phase.REJECTED, s.conds.message("Approved")
    if blocked or waiting or not serving_target:
        return Phase.AWAITING_PROMOTION, blocked or waiting or s.conds.message("ProductionReady")
    return Phase.DEPLOYED, s.conds.message("ProductionReady")


def summarize(s: PassState) -> Verdict:
    assert s.staging and s.production and s.promotion
    transitional = "deploying" in (s.staging.state, s.production.state)
    requeue = s.timing.poll if transitional else s.timing.resync
    stall = _stall(s)
    s.new.stalled = stall
    _staging_ready(s)
    serving_target = _production_ready(s)
    if stall:
        return Verdict(Phase.FAILED, stall.message, s.conds, requeue, stall=stall)

    phase, message = _phase(s, serving_target)
    if phase in (Phase.DEPLOYING_STAGING, Phase.TESTING, Phase.PROMOTING):
        s.conds.reconciling(phase, message)
    # Ready: production serves what the spec asks for. Automatic promotion asks for the newest
    # approved version; Manual asks for promotedVersion.
    target, candidate = s.promotion.target, s.candidate
    done = serving_target and not s.promotion.blocked
    if s.spec.production.promotion == "Automatic" and candidate and target:
        done = done and target.version == candidate.version
    if done:
        extra = "" if phase == Phase.DEPLOYED else f"; {message}"
        s.conds.ready(Reason.DEPLOYED, s.conds.message("ProductionReady") + extra)
    else:
        reason = Reason.AWAITING_APPROVAL if phase == Phase.PENDING_APPROVAL else phase
        s.conds.not_ready(reason, message)
        if phase == Phase.REJECTED and not serving_target:
            s.conds.stalled(Reason.REJECTED, message + "; waiting for a new version")
    return Verdict(phase, message, s.conds, requeue)
