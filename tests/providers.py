"""Test helpers for the providers: the requests the executor would build, the hint status would
give, and records of the calls a provider makes (botocore's API calls, the local provider's
calls on its state).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.config import Config

from modeldeploy import naming
from modeldeploy.providers.local.state import State
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.remote import DeployRequest, ModelVersion, Observed, ObserveHint, RecordedStage

# What changes the local state; every other State method only reads.
STATE_WRITES = frozenset(
    {
        "ensure_group",
        "register",
        "set_approval",
        "add_endpoint",
        "update_endpoint",
        "delete_endpoint",
    }
)


def deploy_request(
    version: ModelVersion,
    endpoint: str,
    *,
    stage: str = "staging",
    instance_type: str = "ml.m5.large",
    count: int = 1,
    capture: int = 0,
    dest: str | None = None,
    config_name: str | None = None,
    role_arn: str | None = None,
) -> DeployRequest:
    """The request the executor would make to put `version` on `endpoint`."""
    content = {
        "version": version.arn,
        "instanceType": instance_type,
        "instanceCount": count,
        "dataCapturePercent": capture,
    }
    return DeployRequest(
        stage=stage,
        endpoint_name=endpoint,
        config_name=config_name or naming.config_name(endpoint, content),
        version=version,
        instance_type=instance_type,
        instance_count=count,
        data_capture_percent=capture,
        data_capture_destination=dest,
        role_arn=role_arn,
    )


STEADY_OWNER = "ml/churn"


def steady_hint(observed: Observed) -> ObserveHint:
    """What status holds once it has recorded `observed` and no deployment is in flight."""

    def stage(endpoint) -> RecordedStage:
        return RecordedStage(endpoint.name, endpoint.config_name) if endpoint else RecordedStage()

    return ObserveHint(
        group_arn=observed.group_arn,
        # A steady resource owns its group and has recorded so (else it would be stalled).
        group_owner=observed.group_owner or STEADY_OWNER,
        latest=observed.latest,
        versions=frozenset(v.version for v in observed.versions),
        staging=stage(observed.staging),
        production=stage(observed.production),
    )


@contextmanager
def recorded(*clients) -> Iterator[list[str]]:
    """Names of the API calls the clients make, from botocore's own event hook (no mock)."""
    calls: list[str] = []

    def hook(model, **_: object) -> None:
        calls.append(model.name)

    events = []
    for client in clients:
        event = f"before-call.{client.meta.service_model.service_id.hyphenize()}.*"
        client.meta.events.register(event, hook)
        events.append((client, event))
    try:
        yield calls
    finally:
        for client, event in events:
            client.meta.events.unregister(event, hook)


@contextmanager
def state_calls(*states: State) -> Iterator[list[str]]:
    """Names of the queries made on the local state (reads and writes), in order."""
    calls: list[str] = []
    names = [n for n in vars(State) if not n.startswith("_") and n not in ("exists", "dump")]
    names = [n for n in names if callable(getattr(State, n))]
    for state in states:
        for name in names:
            method = getattr(state, name)

            def record(*args, _name=name, _method=method, **kwargs):
                calls.append(_name)
                return _method(*args, **kwargs)

            setattr(state, name, record)
    try:
        yield calls
    finally:
        for state in states:
            for name in names:
                delattr(state, name)


def fresh_sagemaker_provider(session, region: str, role_arn: str) -> SageMakerProvider:
    """A provider with clients of its own and no retries: what an operator restart looks like."""
    config = Config(retries={"mode": "standard", "max_attempts": 1})
    return SageMakerProvider(
        region,
        role_arn,
        sagemaker_client=session.client("sagemaker", config=config),
        runtime_client=session.client("sagemaker-runtime", config=config),
        s3_client=session.client("s3", config=config),
    )
