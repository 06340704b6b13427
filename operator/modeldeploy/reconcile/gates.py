"""The two gates: approval of the newest version, and promotion to production."""

from __future__ import annotations

from dataclasses import dataclass

from modeldeploy.reconcile.actions import SetApproval
from modeldeploy.reconcile.pass_state import PassState
from modeldeploy.reconcile.reasons import Phase, Reason
from modeldeploy.reconcile.types import Verdict
from modeldeploy.remote import APPROVED, PENDING, REJECTED, ModelVersion, Observed
from modeldeploy.spec import ApprovalRule


def evaluate_rules(rules: list[ApprovalRule], metrics: dict[str, float]) -> tuple[bool, str]:
    """Return (all passed, a description naming each rule's outcome)."""
    failures, passes = [], []
    for rule in rules:
        value = metrics.get(rule.metric)
        bounds = " and ".join(
            part
            for part in (
                f">= {rule.min:g}" if rule.min is not None else "",
                f"<= {rule.max:g}" if rule.max is not None else "",
            )
            if part
        )
        if value is None:
            failures.append(f"{rule.metric} {bounds}: metric missing")
            continue
        ok = (rule.min is None or value >= rule.min) and (rule.max is None or value <= rule.max)
        (passes if ok else failures).append(f"{rule.metric} {value:g} {bounds}")
    if failures:
        return False, "rejected by rule " + "; ".join(failures)
    return True, "approved: " + "; ".join(passes)


def newest_approved(observed: Observed) -> ModelVersion | None:
    approved = [v for v in observed.versions if v.approval_status == APPROVED]
    return max(approved, key=lambda v: v.version) if approved else None


def _rejections(s: PassState, by: str) -> list[SetApproval]:
    """Versions spec.approval.rejectedVersions names that the registry does not show Rejected
    yet: whatever the policy, a person's rejection is recorded with its reason."""
    out = []
    for rejection in s.spec.approval.rejectedVersions:
        version = s.version(rejection.version)
        if version is not None and version.approval_status != REJECTED:
            reason = f"{rejection.reason} (spec.approval.rejectedVersions of {by})"
            out.append(SetApproval(version.version, version.arn, REJECTED, reason))
    return out


def decide_approval(s: PassState) -> Verdict | None:
    """Approve what spec.approval asks for; otherwise record where the newest version stands."""
    latest = s.observed.latest
    assert latest is not None  # record_latest ran
    approval, group = s.spec.approval, s.spec.modelPackageGroup.name
    by = f"ModelDeployment {s.ctx.namespace}/{s.ctx.name}"
    gate = ""
    decisions = _rejections(s, by)
    if approval.policy == "Manual" and approval.approvedVersion is not None:
        wanted = s.version(approval.approvedVersion)
        if wanted is None:
            gate = (
                f"spec.approval.approvedVersion {approval.approvedVersion} is not in {group} "
                f"(latest is {latest.version})"
            )
        elif wanted.approval_status != APPROVED:
            decisions.append(
                SetApproval(
                    wanted.version,
                    wanted.arn,
                    APPROVED,
                    f"approved by spec.approval.approvedVersion of {by}",
                )
            )
    if latest.approval_status == PENDING and not decisions:
        if approval.policy == "Automatic":
            passed, description = evaluate_rules(approval.rules, latest.metrics)
            decision = APPROVED if passed else REJECTED
            decisions.append(SetApproval(latest.version, latest.arn, decision, description))
        elif not gate:
            gate = (
                f"version {latest.version} awaits approval: set "
                f"spec.approval.approvedVersion: {latest.version}"
            )
    if decisions:
        s.actions.extend(decisions)
        message = f"updating approval of version {decisions[-1].version}"
        s.conds.set("Approved", False, Reason.APPROVING, message)
        s.conds.not_ready(Reason.APPROVING, message)
        s.conds.reconciling(Reason.APPROVING, message)
        return Verdict(Phase.PENDING_APPROVAL, message, s.conds, s.timing.act)
    if latest.approval_status == APPROVED:
        s.conds.set("Approved", True, Reason.APPROVED, f"version {latest.version} is approved")
    elif latest.approval_status == REJECTED:
        detail = latest.approval_description or "no description"
        message = f"version {latest.version} rejected: {detail}"
        s.conds.set("Approved", False, Reason.REJECTED, message)
    else:
        s.conds.set("Approved", False, Reason.AWAITING_APPROVAL, gate)
    return None


@dataclass(frozen=True)
class Promotion:
    """Which version production should serve. `blocked` says why the spec's wish cannot be met
    yet; `waiting` names a newer version a person may promote."""

    target: ModelVersion | None
    blocked: str = ""
    waiting: str = ""


def promotion(s: PassState, candidate: ModelVersion | None, smoke_ok: bool) -> Promotion:
    production = s.old.production
    current = s.version(production.version if production else None)
    prod = s.spec.production
    if prod.promotion == "Automatic":
        return Promotion(candidate if candidate and smoke_ok else current)
    waiting = ""
    # Versions a person moved production off: the one it left at the last change, and, while a
    # change is under way (or settles in this very pass), the one it still served.
    moved_off = {production.previousVersion} if production else set()
    if production and prod.promotedVersion not in (None, production.version):
        moved_off.add(production.version)
    if (
        candidate
        and smoke_ok
        and prod.promotedVersion != candidate.version
        and candidate.version not in moved_off
        and candidate.version > (prod.promotedVersion or 0)
    ):
        waiting = (
            f"version {candidate.version} passed staging: set "
            f"spec.production.promotedVersion: {candidate.version} to promote it"
        )
    if prod.promotedVersion is None:
        return Promotion(None, waiting=waiting)
    wanted = s.version(prod.promotedVersion)
    if wanted is None:
        return Promotion(
            current, f"spec.production.promotedVersion {prod.promotedVersion} does not exist"
        )
    if wanted.approval_status != APPROVED:
        return Promotion(
            current,
            f"spec.production.promotedVersion {wanted.version} is {wanted.approval_status}, "
            "not Approved",
        )
    if candidate and wanted.version == candidate.version and not smoke_ok:
        return Promotion(current, f"version {wanted.version} is promoted once it passes staging")
    return Promotion(wanted, waiting=waiting)
