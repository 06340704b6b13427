"""Planner step for one stage (staging or production): bring its endpoint to the target version
through the endpoint life cycle, and record what it serves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modeldeploy import naming
from modeldeploy.reconcile.actions import DeleteEndpoint, DeployEndpoint, Stage, stall_key
from modeldeploy.reconcile.pass_state import PassState
from modeldeploy.reconcile.reasons import Reason, in_service
from modeldeploy.reconcile.types import Event
from modeldeploy.remote import DeployRequest, Endpoint, EndpointStatus, ModelVersion
from modeldeploy.status import ProductionStatus, StagingStatus, StallStatus

State = Literal["absent", "deploying", "serving", "stalled"]


@dataclass
class StageOutcome:
    """Where one stage stands after this pass."""

    state: State = "absent"
    message: str = ""
    stall: StallStatus | None = None


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


def _observe_into(
    stage: Stage, st: StagingStatus | ProductionStatus, endpoint: Endpoint | None, s: PassState
) -> None:
    """Copy what the endpoint reports into the stage's status; record what it serves once it
    settles on the config we asked for."""
    st.endpointStatus = endpoint.status if endpoint else None
    st.failureReason = (endpoint.failure_reason or None) if endpoint else None
    st.url = (endpoint.url or None) if endpoint else None
    serving_config = endpoint.config_name if endpoint else ""
    settled = endpoint is not None and endpoint.status == EndpointStatus.IN_SERVICE
    if settled and serving_config and serving_config == st.targetConfigName:
        if st.endpointConfigName != serving_config:
            s.events.append(
                Event(
                    "Normal",
                    in_service(stage),
                    f"{st.endpointName} serves version {st.targetVersion} ({serving_config})",
                )
            )
            if isinstance(st, ProductionStatus) and st.version not in (None, st.targetVersion):
                st.previousVersion = st.version  # only once the new one serves
        st.endpointConfigName = serving_config
        st.version = st.targetVersion


def _stage_status(s: PassState, stage: Stage, name: str) -> StagingStatus | ProductionStatus:
    """The stage's status for this pass: what was recorded, with the endpoint's report."""
    old = s.old.stage(stage)
    fresh = StagingStatus() if stage == "staging" else ProductionStatus()
    st = old.model_copy() if old else fresh  # fields are replaced, never changed in place
    setattr(s.new, stage, st)
    st.endpointName = name
    _observe_into(stage, st, s.endpoint(stage), s)
    return st


def _deploy_action(
    s: PassState, stage: Stage, name: str, target: ModelVersion, capture: int, dest: str | None
) -> DeployEndpoint:
    sizing = s.spec.staging if stage == "staging" else s.spec.production
    count, instance_type = sizing.instanceCount, sizing.instanceType
    request = DeployRequest(
        stage=stage,
        endpoint_name=name,
        config_name=desired_config(name, target, instance_type, count, capture),
        version=target,
        instance_type=instance_type,
        instance_count=count,
        data_capture_percent=capture,
        data_capture_destination=dest,
        role_arn=s.spec.roleArn,
    )
    return DeployEndpoint(request, update=s.endpoint(stage) is not None)


def plan_stage(
    s: PassState,
    stage: Stage,
    target: ModelVersion | None,
    *,
    capture: int = 0,
    capture_destination: str | None = None,
) -> StageOutcome:
    name = naming.endpoint_name(s.ctx.namespace, s.ctx.name, stage)
    old, st, endpoint = s.old.stage(stage), _stage_status(s, stage, name), s.endpoint(stage)
    out = StageOutcome()
    if target is None:
        in_svc = endpoint is not None and endpoint.status == EndpointStatus.IN_SERVICE
        out.state = "serving" if in_svc else "absent"
        return out

    deploy = _deploy_action(s, stage, name, target, capture, capture_destination)
    want = deploy.request.config_name
    if endpoint is None:
        if old and old.endpointConfigName:
            text = f"{name} no longer exists; recreating it"
            s.events.append(Event("Warning", Reason.ENDPOINT_MISSING, text))
            st.endpointConfigName = st.version = None  # a new endpoint is tested afresh
            if isinstance(st, StagingStatus):
                st.smokeTest = None
        message = f"creating {stage} endpoint {name} with version {target.version}"
        return _deploying(s, out, deploy, st, message)

    serving_config = endpoint.config_name
    if endpoint.status == EndpointStatus.SYSTEM_UPDATING and serving_config == want:
        # The platform repairs an endpoint that serves what we want: degraded, not a deploy.
        if not old or old.endpointStatus != EndpointStatus.SYSTEM_UPDATING:
            detail = endpoint.failure_reason or "the platform is updating it"
            s.events.append(Event("Warning", Reason.ENDPOINT_REPAIRING, f"{name}: {detail}"))
        st.endpointConfigName, st.version = want, target.version
        out.state = "serving"
        return out

    if EndpointStatus.is_transitional(endpoint.status):
        out.state = "deploying"
        out.message = f"{stage} endpoint {name} is {endpoint.status}"
        return out

    failed = _failed(s, stage, target, endpoint, st, want, out)
    if failed is not None:
        return failed

    if serving_config == want:
        st.endpointConfigName, st.version = want, target.version
        out.state = "serving"
        return out
    message = f"updating {stage} endpoint {name} to version {target.version}"
    return _deploying(s, out, deploy, st, message)


def _deploying(
    s: PassState,
    out: StageOutcome,
    deploy: DeployEndpoint,
    st: StagingStatus | ProductionStatus,
    message: str,
) -> StageOutcome:
    s.actions.append(deploy)
    out.state, out.message = "deploying", message
    st.targetConfigName, st.targetVersion = deploy.request.config_name, deploy.version
    return out


def _failed(
    s: PassState,
    stage: Stage,
    target: ModelVersion,
    endpoint: Endpoint,
    st: StagingStatus | ProductionStatus,
    want: str,
    out: StageOutcome,
) -> StageOutcome | None:
    """A failed creation or update of the config we asked for is terminal for that input; once
    the spec changes it is retried (a failed creation is deleted first)."""
    asked = st.targetConfigName == want
    failed_create = EndpointStatus.is_failed(endpoint.status)
    failed_update = (
        endpoint.status == EndpointStatus.IN_SERVICE
        and endpoint.config_name != want
        and asked
        and bool(endpoint.failure_reason)
    )
    if not (failed_create or failed_update):
        return None
    key = stall_key("deploy", stage, want)
    recorded = s.old.stalled
    if asked and (s.stalled_on(key) or recorded is None or recorded.key != key):
        # First sight of this failure, or still the same spec.
        out.state = "stalled"
        out.stall = s.stalled_on(key) or StallStatus(
            key=key,
            generation=s.ctx.generation,
            reason=Reason.DEPLOYMENT_FAILED,
            message=f"{stage} deployment of version {target.version} failed: "
            f"{endpoint.failure_reason or 'no reason given'}",
        )
        out.message = out.stall.message
        return out
    if failed_create:
        s.actions.append(DeleteEndpoint(stage=stage, endpoint_name=endpoint.name))
        out.state = "deploying"
        out.message = f"deleting failed {stage} endpoint {endpoint.name} before retrying"
        return out
    return None
