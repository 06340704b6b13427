"""The reconciler's brain: a pure function of (spec, status, observed remote state).

`plan()` returns the actions to take now and the status to write. It performs no I/O and reads
no clock (the caller passes `now`), so every transition is a table test away.

One pass moves each part of the pipeline at most one step; the caller requeues soon after any
mutating action and re-observes, so a restart anywhere resumes from the remote state and status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from modeldeploy import naming
from modeldeploy.reconcile.actions import (
    Action,
    DeleteEndpoint,
    DeployEndpoint,
    EnsureGroup,
    RegisterVersion,
    SetApproval,
    SmokeTest,
    Stage,
    action_key,
    stall_key,
)
from modeldeploy.reconcile.conditions import merge_conditions, stalled_conditions
from modeldeploy.remote import (
    APPROVED,
    PENDING,
    REJECTED,
    TRANSITIONAL_ENDPOINT_STATUSES,
    Endpoint,
    ModelVersion,
    Observed,
)
from modeldeploy.spec import ApprovalRule, ModelDeploymentSpec

Cond = tuple[str, str, str]  # (status, reason, message)
# An endpoint in one of these will not recover by itself: delete and recreate it.
FAILED_ENDPOINT_STATUSES = frozenset({"Failed", "OutOfService", "UpdateRollbackFailed"})


@dataclass(frozen=True)
class Context:
    namespace: str
    name: str
    generation: int
    now: datetime


@dataclass(frozen=True)
class Timing:
    """Requeue delays in seconds."""

    act: float = 1.0  # right after a mutating action: look at its effect
    poll: float = 30.0  # something remote is transitional
    resync: float = 600.0  # steady


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Plan:
    actions: list[Action]
    status: dict
    events: list[Event] = field(default_factory=list)
    requeue_after: float = 600.0


# -- helpers ------------------------------------------------------------------------------------


def _stalled_on(status: dict, key: str, generation: int) -> dict | None:
    """The stall record for `key` if it still holds (same input, same spec generation)."""
    stalled = status.get("stalled") or {}
    if stalled.get("key") == key and stalled.get("generation") == generation:
        return stalled
    return None


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


def desired_config(
    endpoint: str, version: ModelVersion, instance_type: str, count: int, capture: int
) -> str:
    return naming.config_name(
        endpoint,
        {
            "version": version.arn,
            "instanceType": instance_type,
            "instanceCount": count,
            "dataCapturePercent": capture,
        },
    )


# -- stages -------------------------------------------------------------------------------------


@dataclass
class StageOutcome:
    """What one stage (staging or production) needs and reports."""

    status: dict
    actions: list[Action] = field(default_factory=list)
    state: Literal["absent", "deploying", "serving", "failed", "stalled"] = "absent"
    message: str = ""
    stall: dict | None = None
    events: list[Event] = field(default_factory=list)


def _plan_stage(
    stage: Stage,
    *,
    target: ModelVersion | None,
    instance_type: str,
    count: int,
    capture: int,
    capture_destination: str | None,
    old: dict,
    endpoint: Endpoint | None,
    status: dict,
    ctx: Context,
) -> StageOutcome:
    name = naming.endpoint_name(ctx.namespace, ctx.name, stage)
    st = {k: v for k, v in old.items() if k not in ("endpointStatus", "failureReason", "url")}
    st["endpointName"] = name
    if endpoint:
        st["endpointStatus"] = endpoint.status
        if endpoint.failure_reason:
            st["failureReason"] = endpoint.failure_reason
        if endpoint.url:
            st["url"] = endpoint.url
    out = StageOutcome(status=st)

    # Record what the endpoint serves once it settles on the config we asked for.
    serving_config = endpoint.config_name if endpoint else ""
    settled = endpoint is not None and endpoint.status == "InService" and bool(serving_config)
    if settled and serving_config == old.get("targetConfigName"):
        if old.get("endpointConfigName") != serving_config:
            out.events.append(
                Event(
                    "Normal",
                    f"{stage.capitalize()}InService",
                    f"{name} serves version {old.get('targetVersion')} ({serving_config})",
                )
            )
            if stage == "production" and old.get("version") not in (None, old.get("targetVersion")):
                st["previousVersion"] = old.get("version")  # only once the new one serves
        st["endpointConfigName"] = serving_config
        st["version"] = old.get("targetVersion")

    if target is None:
        out.state = "serving" if endpoint and endpoint.status == "InService" else "absent"
        return out

    want = desired_config(name, target, instance_type, count, capture)
    key = stall_key("deploy", stage, want)
    action = DeployEndpoint(
        stage=stage,
        endpoint_name=name,
        config_name=want,
        model_name="",
        version=target.version,
        version_arn=target.arn,
        image=target.image,
        artifact=target.artifact,
        instance_type=instance_type,
        instance_count=count,
        data_capture_percent=capture,
        data_capture_destination=capture_destination,
        update=endpoint is not None,
    )

    if endpoint is None:
        if old.get("endpointConfigName"):
            out.events.append(
                Event("Warning", "EndpointMissing", f"{name} no longer exists; recreating it")
            )
            for gone in ("endpointConfigName", "version", "smokeTest"):
                st.pop(gone, None)  # a new endpoint is tested afresh
        out.actions.append(action)
        out.state = "deploying"
        out.message = f"creating {stage} endpoint {name} with version {target.version}"
        st.update(targetConfigName=want, targetVersion=target.version)
        return out

    if endpoint.status == "SystemUpdating" and serving_config == want:
        # The platform repairs an endpoint that serves what we want: degraded, not a deploy.
        if old.get("endpointStatus") != "SystemUpdating":
            detail = endpoint.failure_reason or "the platform is updating it"
            out.events.append(Event("Warning", "EndpointRepairing", f"{name}: {detail}"))
        st.update(endpointConfigName=want, version=target.version)
        out.state = "serving"
        return out

    if endpoint.status in TRANSITIONAL_ENDPOINT_STATUSES:
        out.state = "deploying"
        out.message = f"{stage} endpoint {name} is {endpoint.status}"
        return out

    failed_create = endpoint.status in FAILED_ENDPOINT_STATUSES
    failed_update = (
        endpoint.status == "InService"
        and serving_config != want
        and old.get("targetConfigName") == want
        and bool(endpoint.failure_reason)
    )
    if failed_create or failed_update:
        if old.get("targetConfigName") == want:
            reason = endpoint.failure_reason or "no reason given"
            held = _stalled_on(status, key, ctx.generation)
            if held or (status.get("stalled") or {}).get("key") != key:
                # First sight of this failure, or still the same spec: terminal for this input.
                out.state = "stalled"
                out.stall = held or {
                    "key": key,
                    "generation": ctx.generation,
                    "reason": "DeploymentFailed",
                    "message": f"{stage} deployment of version {target.version} failed: {reason}",
                }
                if not held:
                    out.events.append(Event("Warning", "DeploymentFailed", out.stall["message"]))
                out.message = out.stall["message"] + " (change the spec to retry)"
                return out
        # The spec changed since the failure: retry. A failed creation must be deleted first.
        if failed_create:
            out.actions.append(DeleteEndpoint(stage=stage, endpoint_name=name))
            out.state = "deploying"
            out.message = f"deleting failed {stage} endpoint {name} before retrying"
            return out

    if serving_config == want:
        st.update(endpointConfigName=want, version=target.version)
        out.state = "serving"
        return out

    out.actions.append(action)
    out.state = "deploying"
    out.message = f"updating {stage} endpoint {name} to version {target.version}"
    st.update(targetConfigName=want, targetVersion=target.version)
    return out


# -- the plan -----------------------------------------------------------------------------------


def invalid_spec(status: dict, message: str, ctx: Context) -> Plan:
    """Status for a spec the operator cannot act on: stalled until the spec changes."""
    new = dict(status)
    new.update(observedGeneration=ctx.generation, phase="Failed", message=message)
    new["stalled"] = {
        "key": "spec",
        "generation": ctx.generation,
        "reason": "InvalidSpec",
        "message": message,
    }
    new["conditions"] = merge_conditions(
        status.get("conditions"),
        stalled_conditions("InvalidSpec", message),
        generation=ctx.generation,
        now=ctx.now,
    )
    events = (
        []
        if _stalled_on(status, "spec", ctx.generation)
        else [Event("Warning", "InvalidSpec", message)]
    )
    return Plan(actions=[], status=new, events=events, requeue_after=float("inf"))


def plan(
    spec: ModelDeploymentSpec,
    status: dict,
    observed: Observed,
    ctx: Context,
    timing: Timing = Timing(),
) -> Plan:
    actions: list[Action] = []
    events: list[Event] = []
    conds: dict[str, Cond] = {}
    new: dict = {
        k: v
        for k, v in status.items()
        if k in ("registration", "latestVersion", "staging", "production", "stalled")
    }
    new["observedGeneration"] = ctx.generation
    new["modelPackageGroup"] = {
        "name": spec.modelPackageGroup.name,
        "arn": observed.group_arn or "",
    }
    stalled = status.get("stalled") or {}
    if stalled.get("key") == "spec" or stalled.get("generation") != ctx.generation:
        new.pop("stalled", None)  # the spec changed since: the stall no longer holds
    if stalled.get("key") == "spec":
        stalled = {}

    # An action that failed terminally in this generation is not retried until the spec
    # changes; everything else goes on.
    held = stalled if stalled.get("source") == "action" else None
    if held and held.get("generation") != ctx.generation:
        held = None

    def finish(phase: str, message: str, requeue: float) -> Plan:
        if held and any(action_key(a) == held["key"] for a in actions):
            actions[:] = [a for a in actions if action_key(a) != held["key"]]
            message = f"{held['message']} (change the spec to retry)"
            phase, requeue = "Failed", timing.resync
            conds["Ready"] = ("False", held["reason"], message)
            if held["reason"] == "RegistrationFailed":
                conds["Registered"] = ("False", "RegistrationFailed", message)
            stall(held["reason"], message)
            new["stalled"] = held
        elif held and new.get("stalled") == held:
            new.pop("stalled")  # the failed input is no longer wanted
        new["phase"] = phase
        new["message"] = message
        for ctype in ("Ready", "Reconciling", "Stalled"):
            conds.setdefault(ctype, ("False", phase, message))
        new["conditions"] = merge_conditions(
            status.get("conditions"), conds, generation=ctx.generation, now=ctx.now
        )
        if status.get("phase") != phase:
            events.append(Event("Normal", phase, message))
        return Plan(
            actions=actions,
            status=new,
            events=events,
            requeue_after=timing.act if actions else requeue,
        )

    def progressing(reason: str, message: str) -> None:
        conds["Reconciling"] = ("True", reason, message)
        conds["Stalled"] = ("False", reason, message)

    def stall(reason: str, message: str) -> None:
        conds["Stalled"] = ("True", reason, message)
        conds["Reconciling"] = ("False", reason, message)

    # 1. The model package group.
    if observed.group_arn is None:
        actions.append(EnsureGroup(spec.modelPackageGroup.name, spec.modelPackageGroup.description))
        msg = f"creating model package group {spec.modelPackageGroup.name}"
        conds["Registered"] = ("False", "CreatingGroup", msg)
        conds["Ready"] = ("False", "Registering", msg)
        progressing("CreatingGroup", msg)
        return finish("Registering", msg, timing.act)

    # 2. Register spec.model when its artifact changed.
    registration = status.get("registration") or {}
    wanted_registration = spec.model and (
        spec.model.artifact,
        spec.model.frameworkVersion or "",
        spec.model.image or "",
    )
    recorded = (
        registration.get("artifact"),
        registration.get("frameworkVersion", ""),
        registration.get("image", ""),
    )
    registry_lost = bool(registration) and observed.version(registration.get("version")) is None
    if spec.model and (wanted_registration != recorded or registry_lost):
        actions.append(RegisterVersion(spec.model.artifact))
        msg = f"registering {spec.model.artifact} in {spec.modelPackageGroup.name}"
        conds["Registered"] = ("False", "Registering", msg)
        conds["Ready"] = ("False", "Registering", msg)
        progressing("Registering", msg)
        return finish("Registering", msg, timing.act)

    latest = observed.latest
    if latest is None:
        msg = (
            f"model package group {spec.modelPackageGroup.name} has no version yet: set "
            "spec.model.artifact or register one with `modeldeploy register`"
        )
        conds["Registered"] = ("False", "NoModelVersion", msg)
        conds["Ready"] = ("False", "NoModelVersion", msg)
        return finish("Registering", msg, timing.resync)

    new["latestVersion"] = {
        "version": latest.version,
        "arn": latest.arn,
        "approvalStatus": latest.approval_status,
        "metrics": dict(latest.metrics),
    }
    if latest.approval_description:
        new["latestVersion"]["approvalDescription"] = latest.approval_description
    conds["Registered"] = ("True", "Registered", f"version {latest.version} is registered")
    seen = status.get("latestVersion") or {}
    if seen and seen.get("version") != latest.version:
        events.append(Event("Normal", "NewVersion", f"version {latest.version} is the newest"))
    elif seen and seen.get("approvalStatus") != latest.approval_status:
        events.append(
            Event(
                "Normal",
                "ApprovalChanged",
                f"version {latest.version} is now {latest.approval_status}",
            )
        )

    # 3. Approval.
    approval = spec.approval
    gate = ""
    if approval.policy == "Manual" and approval.approvedVersion is not None:
        wanted = observed.version(approval.approvedVersion)
        if wanted is None:
            gate = (
                f"spec.approval.approvedVersion {approval.approvedVersion} is not in "
                f"{spec.modelPackageGroup.name} (latest is {latest.version})"
            )
        elif wanted.approval_status != APPROVED:
            actions.append(
                SetApproval(
                    wanted.version,
                    wanted.arn,
                    APPROVED,
                    f"approved by spec.approval.approvedVersion of "
                    f"ModelDeployment {ctx.namespace}/{ctx.name}",
                )
            )
    if latest.approval_status == PENDING and not actions:
        if approval.policy == "Automatic":
            passed, description = evaluate_rules(approval.rules, latest.metrics)
            actions.append(
                SetApproval(
                    latest.version, latest.arn, APPROVED if passed else REJECTED, description
                )
            )
        elif not gate:
            gate = (
                f"version {latest.version} awaits approval: set "
                f"spec.approval.approvedVersion: {latest.version}"
            )
    if actions:
        msg = f"updating approval of version {actions[-1].version}"  # type: ignore[union-attr]
        conds["Approved"] = ("False", "Approving", msg)
        conds["Ready"] = ("False", "Approving", msg)
        progressing("Approving", msg)
        return finish("PendingApproval", msg, timing.act)
    if latest.approval_status == APPROVED:
        conds["Approved"] = ("True", "Approved", f"version {latest.version} is approved")
    elif latest.approval_status == REJECTED:
        detail = latest.approval_description or "no description"
        conds["Approved"] = ("False", "Rejected", f"version {latest.version} rejected: {detail}")
    else:
        conds["Approved"] = ("False", "AwaitingApproval", gate)

    def stage(name: Stage, target: ModelVersion | None, capture: int, dest: str | None):
        spec_stage = spec.staging if name == "staging" else spec.production
        outcome = _plan_stage(
            name,
            target=target,
            instance_type=spec_stage.instanceType,
            count=spec_stage.instanceCount,
            capture=capture,
            capture_destination=dest,
            old=status.get(name) or {},
            endpoint=observed.staging if name == "staging" else observed.production,
            status=status,
            ctx=ctx,
        )
        new[name] = outcome.status
        events.extend(outcome.events)
        actions.extend(outcome.actions)
        return outcome

    # 4. Staging serves the newest approved version.
    candidate = newest_approved(observed)
    staging = stage(
        "staging", candidate, spec.staging.dataCapturePercent, spec.staging.dataCaptureDestination
    )

    smoke, smoke_msg = "absent", ""
    if candidate and staging.state == "serving":
        smoke, smoke_msg = _smoke(spec, staging.status, candidate, ctx, actions)
    smoke_ok = smoke == "passed"

    # 5. Production serves the promoted version.
    target, blocked, waiting = _production_target(spec, observed, candidate, smoke_ok, status)
    production = stage("production", target, 0, None)

    # 6. Conditions and phase, most urgent first.
    stall_record = staging.stall or production.stall
    if not stall_record and smoke == "failed":
        stall_record = {
            "key": stall_key("smoke", staging.status.get("endpointConfigName")),
            "generation": ctx.generation,
            "reason": "SmokeTestFailed",
            "message": smoke_msg,
        }
        if (status.get("stalled") or {}).get("key") != stall_record["key"]:
            events.append(Event("Warning", "SmokeTestFailed", smoke_msg))
    if stall_record:
        new["stalled"] = stall_record
    else:
        new.pop("stalled", None)

    if candidate and smoke_ok:
        conds["StagingReady"] = (
            "True",
            "SmokeTestPassed" if spec.staging.smokeTest else "InService",
            f"staging serves version {candidate.version}" + (f"; {smoke_msg}" if smoke_msg else ""),
        )
    else:
        reason = {"stalled": "DeploymentFailed", "deploying": "Deploying"}.get(staging.state)
        reason = reason or {"failed": "SmokeTestFailed", "running": "Testing"}.get(smoke)
        conds["StagingReady"] = (
            "False",
            reason or "NoApprovedVersion",
            staging.message or smoke_msg or "no approved version to deploy",
        )

    serving_target = target is not None and production.state == "serving"
    if serving_target and not blocked:
        served = f"production serves version {target.version}"  # type: ignore[union-attr]
        conds["ProductionReady"] = ("True", "InService", served)
    else:
        reason = {"stalled": "DeploymentFailed", "deploying": "Promoting"}.get(production.state)
        conds["ProductionReady"] = (
            "False",
            reason or ("PromotionBlocked" if blocked else "AwaitingPromotion"),
            production.message or blocked or waiting or "nothing promoted yet",
        )

    transitional = staging.state == "deploying" or production.state == "deploying"
    requeue = timing.poll if transitional else timing.resync
    if stall_record:
        msg = stall_record["message"] + " (change the spec to retry)"
        stall(stall_record["reason"], msg)
        conds["Ready"] = ("False", stall_record["reason"], msg)
        return finish("Failed", msg, requeue)

    if staging.state == "deploying":
        phase, reason, msg = "DeployingStaging", "DeployingStaging", staging.message
    elif smoke == "running":
        phase, reason, msg = "Testing", "Testing", smoke_msg
    elif production.state == "deploying":
        phase, reason, msg = "Promoting", "Promoting", production.message
    elif latest.approval_status == PENDING:
        phase, reason, msg = "PendingApproval", "AwaitingApproval", gate
    elif latest.approval_status == REJECTED:
        phase, reason, msg = "Rejected", "Rejected", conds["Approved"][2]
    elif blocked or waiting or not serving_target:
        phase, reason, msg = (
            "AwaitingPromotion",
            "AwaitingPromotion",
            (blocked or waiting or conds["ProductionReady"][2]),
        )
    else:
        phase, reason, msg = "Deployed", "Deployed", conds["ProductionReady"][2]
    if phase in ("DeployingStaging", "Testing", "Promoting"):
        progressing(phase, msg)

    # Ready: production serves what the spec asks for. Automatic promotion asks for the newest
    # approved version; Manual asks for promotedVersion.
    wants_candidate = spec.production.promotion == "Automatic" and candidate is not None
    done = serving_target and not blocked
    if wants_candidate and target is not None and target.version != candidate.version:
        done = False
    if done:
        extra = "" if phase == "Deployed" else f"; {msg}"
        conds["Ready"] = ("True", "Deployed", conds["ProductionReady"][2] + extra)
    else:
        conds["Ready"] = ("False", reason, msg)
        if phase == "Rejected" and not serving_target:
            stall("Rejected", msg + "; waiting for a new version")
    return finish(phase, msg, requeue)


def _smoke(
    spec: ModelDeploymentSpec,
    staging_status: dict,
    candidate: ModelVersion,
    ctx: Context,
    actions: list[Action],
) -> tuple[Literal["passed", "running", "failed"], str]:
    """Decide on the staging smoke test of the version staging now serves."""
    test = spec.staging.smokeTest
    if test is None:
        return "passed", ""
    config = staging_status.get("endpointConfigName", "")
    last = staging_status.get("smokeTest") or {}
    same_input = last.get("configName") == config and last.get("version") == candidate.version
    if same_input and last.get("passed"):
        return "passed", f"smoke test passed in {last.get('latencyMs')} ms"
    if same_input and last.get("passed") is False and last.get("generation") == ctx.generation:
        return "failed", f"smoke test of version {candidate.version} failed: {last.get('message')}"
    actions.append(
        SmokeTest(
            endpoint_name=staging_status["endpointName"],
            version=candidate.version,
            config_name=config,
            payload=test.payload,
            content_type=test.contentType,
            max_latency_ms=test.maxLatencyMs,
        )
    )
    return "running", f"running the smoke test against version {candidate.version}"


def _production_target(
    spec: ModelDeploymentSpec,
    observed: Observed,
    candidate: ModelVersion | None,
    smoke_ok: bool,
    status: dict,
) -> tuple[ModelVersion | None, str, str]:
    """Which version production should serve.

    Returns (target, blocked, waiting): `blocked` says why the spec's wish cannot be met yet,
    `waiting` names a newer version a person may promote.
    """
    current = observed.version((status.get("production") or {}).get("version"))
    prod = spec.production
    if prod.promotion == "Automatic":
        return (candidate if candidate and smoke_ok else current), "", ""
    waiting = ""
    rolled_back_from = (status.get("production") or {}).get("previousVersion")
    if (
        candidate
        and smoke_ok
        and prod.promotedVersion != candidate.version
        and candidate.version != rolled_back_from  # a person just moved production off it
        and candidate.version > (prod.promotedVersion or 0)
    ):
        waiting = (
            f"version {candidate.version} passed staging: set "
            f"spec.production.promotedVersion: {candidate.version} to promote it"
        )
    if prod.promotedVersion is None:
        return None, "", waiting
    wanted = observed.version(prod.promotedVersion)
    if wanted is None:
        return current, f"spec.production.promotedVersion {prod.promotedVersion} does not exist", ""
    if wanted.approval_status != APPROVED:
        return (
            current,
            (
                f"spec.production.promotedVersion {wanted.version} is {wanted.approval_status}, "
                "not Approved"
            ),
            "",
        )
    if candidate and wanted.version == candidate.version and not smoke_ok:
        return current, f"version {wanted.version} is promoted once it passes staging", ""
    return wanted, "", waiting
