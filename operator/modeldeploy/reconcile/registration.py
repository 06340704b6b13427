"""Planner steps up to a registered version: the group, spec.model, the newest version."""

from __future__ import annotations

from modeldeploy.reconcile.actions import ClaimGroup, EnsureGroup, RegisterVersion, stall_key
from modeldeploy.reconcile.pass_state import PassState
from modeldeploy.reconcile.reasons import Phase, Reason
from modeldeploy.reconcile.types import Event, Verdict
from modeldeploy.status import LatestVersionStatus, StallStatus, VersionStatus

SHOWN_VERSIONS = 10  # status.versions: what `kubectl modeldeploy get` lists


def _registering(s: PassState, reason: Reason, message: str) -> Verdict:
    s.conds.set("Registered", False, reason, message)
    s.conds.not_ready(reason, message)
    s.conds.reconciling(reason, message)
    return Verdict(Phase.REGISTERING, message, s.conds, s.timing.act)


def ensure_group(s: PassState) -> Verdict | None:
    group = s.spec.modelPackageGroup
    if s.observed.group_arn is not None:
        return None
    s.actions.append(EnsureGroup(group.name, group.description, s.ctx.owner))
    return _registering(s, Reason.CREATING_GROUP, f"creating model package group {group.name}")


def check_owner(s: PassState) -> Verdict | None:
    """A group belongs to the ModelDeployment that created or adopted it: no other resource
    registers into it, approves its versions or deploys them."""
    group, me = s.spec.modelPackageGroup, s.ctx.owner
    owner, arn = s.observed.group_owner, s.observed.group_arn or ""
    if owner == me:
        return None
    if owner:
        reason = Reason.GROUP_OWNED_ELSEWHERE
        message = (
            f"model package group {group.name} belongs to ModelDeployment {owner}: only it "
            "registers, approves and deploys from the group; choose another "
            "spec.modelPackageGroup.name"
        )
    elif group.adopt:
        s.actions.append(ClaimGroup(arn, me))
        return _registering(s, Reason.ADOPTING_GROUP, f"adopting model package group {group.name}")
    else:
        reason = Reason.GROUP_NOT_ADOPTED
        message = (
            f"model package group {group.name} exists and belongs to no ModelDeployment (a "
            "training pipeline or `modeldeploy register` created it): set "
            "spec.modelPackageGroup.adopt: true to deliver its versions from this resource"
        )
    s.conds.set("Registered", False, reason, message)
    stall = StallStatus(
        key=stall_key("owner", group.name, owner),
        generation=s.ctx.generation,
        reason=reason,
        message=message,
        source="remote",  # judged again every pass: the owner may let the group go
    )
    return Verdict(Phase.FAILED, message, s.conds, s.timing.resync, stall=stall)


def register_model(s: PassState) -> Verdict | None:
    """Register spec.model when its input changed since the last registration, or when the
    version it became is gone (a registry that lost its state)."""
    model = s.spec.model
    if model is None:
        return None
    recorded = s.old.registration
    wanted = (model.artifact, model.frameworkVersion or "", model.image or "")
    lost = recorded is not None and s.version(recorded.version) is None
    if recorded is not None and recorded.input() == wanted and not lost:
        return None
    s.actions.append(RegisterVersion(model.artifact))
    message = f"registering {model.artifact} in {s.spec.modelPackageGroup.name}"
    return _registering(s, Reason.REGISTERING, message)


def record_latest(s: PassState) -> Verdict | None:
    """Record the newest version, which drives the pipeline; wait when there is none."""
    latest = s.observed.latest
    group = s.spec.modelPackageGroup.name
    if latest is None:
        message = (
            f"model package group {group} has no version yet: set spec.model.artifact or "
            "register one with `modeldeploy register`"
        )
        s.conds.set("Registered", False, Reason.NO_MODEL_VERSION, message)
        s.conds.not_ready(Reason.NO_MODEL_VERSION, message)
        return Verdict(Phase.REGISTERING, message, s.conds, s.timing.resync)
    s.new.latestVersion = LatestVersionStatus.of(latest)
    s.new.versions = _versions(s)
    s.conds.set("Registered", True, Reason.REGISTERED, f"version {latest.version} is registered")
    seen = s.old.latestVersion
    if seen and seen.version != latest.version:
        s.events.append(
            Event("Normal", Reason.NEW_VERSION, f"version {latest.version} is the newest")
        )
    elif seen and seen.approvalStatus != latest.approval_status:
        text = f"version {latest.version} is now {latest.approval_status}"
        s.events.append(Event("Normal", Reason.APPROVAL_CHANGED, text))
    return None


def _versions(s: PassState) -> list[VersionStatus]:
    """The newest versions with their approval. A provider may read metrics of the newest
    version only (SageMaker lists versions without them), so metrics seen once are kept."""
    seen = {v.version: v.metrics for v in s.old.versions or []}
    return [
        VersionStatus.model_construct(
            version=v.version,
            approvalStatus=v.approval_status,
            approvalDescription=v.approval_description or None,
            metrics=dict(v.metrics) if v.metrics else seen.get(v.version),
        )
        for v in s.observed.versions[:SHOWN_VERSIONS]
    ]
