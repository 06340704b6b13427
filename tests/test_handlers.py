"""The kopf handlers, called with real resource bodies, driving the sagemaker provider against
the AWS emulator over HTTP. kopf's own Patch, Memo and event queue carry what the handlers
produce; the test applies each status patch the way the API server would."""

from __future__ import annotations

import copy

import kopf
import pytest
from driver import MUTATING, Resource

from modeldeploy import handlers, naming
from modeldeploy.providers import ProviderFactory


@pytest.fixture
def providers(aws_env) -> ProviderFactory:
    return ProviderFactory(default="sagemaker")


@pytest.fixture
def resource(providers, model_artifact, role_arn, upload) -> Resource:
    metrics = upload("churn/1/evaluation.json", b'{"auc": 0.98, "accuracy": 0.95}')
    return Resource(
        {
            "provider": "sagemaker",
            "region": "us-east-1",
            "roleArn": role_arn,
            "modelPackageGroup": {"name": "churn-xgboost"},
            "model": {"artifact": model_artifact, "frameworkVersion": "3.2-0", "metrics": metrics},
            "approval": {"policy": "Manual"},
            "staging": {"smokeTest": {"payload": "0.1,0.2,0.3,0.4", "maxLatencyMs": 5000}},
            "production": {"promotion": "Manual"},
        },
        providers=providers,
    )


def count_calls(providers: ProviderFactory, spec: dict) -> list[str]:
    """Record every SageMaker API operation the provider's own client makes from now on."""
    from modeldeploy.spec import parse_spec

    calls: list[str] = []
    provider = providers.get(parse_spec(spec))
    provider.registry.sm.meta.events.register(
        "before-call.sagemaker.*", lambda model, **_: calls.append(model.name)
    )
    return calls


def test_pipeline_from_registration_to_production(resource, providers, invoke_results):
    seen = resource.reconcile_until("PendingApproval")
    assert seen[0] == "Registering"
    assert resource.status["latestVersion"]["version"] == 1
    assert resource.status["latestVersion"]["approvalStatus"] == "PendingManualApproval"
    assert resource.condition("Ready") == ("False", "AwaitingApproval")
    assert resource.status["observedGeneration"] == 1

    # Approval as code: a spec change acts at once.
    resource.edit_spec(lambda s: s["approval"].update(approvedVersion=1))
    invoke_results([{"Body": "0.73\n", "ContentType": "text/csv"}])
    resource.reconcile_until("AwaitingPromotion")
    staging = resource.status["staging"]
    assert staging["version"] == 1 and staging["endpointStatus"] == "InService"
    assert staging["endpointName"] == naming.endpoint_name("ml", "churn", "staging")
    assert staging["smokeTest"]["passed"] is True
    assert resource.condition("StagingReady") == ("True", "SmokeTestPassed")
    assert resource.condition("Ready") == ("False", "AwaitingPromotion")

    resource.edit_spec(lambda s: s["production"].update(promotedVersion=1))
    resource.reconcile_until("Deployed")
    assert resource.status["production"]["version"] == 1
    assert resource.condition("Ready") == ("True", "Deployed")
    assert resource.status["observedGeneration"] == 3
    reasons = [e.reason for e in resource.events]
    for expected in ("GroupReady", "Registered", "Approved", "DeployingStaging", "Promoting"):
        assert expected in reasons

    # Steady resync: no mutating call, at most two reads, and no status change.
    before = copy.deepcopy(resource.status)
    calls = count_calls(providers, resource.raw["spec"])
    writes = len(resource.writes)
    resource.call(handlers.on_change)
    assert [c for c in calls if c.startswith(MUTATING)] == []
    assert len(calls) <= 2, calls
    assert len(resource.writes) == writes  # nothing to write
    assert resource.status == before


def test_one_call_chains_passes_while_each_effect_is_known_at_once(
    resource, invoke_results
) -> None:
    """With chaining (the operator's default), one handler call moves a pipeline through every
    step whose effect the next pass can read at once — on the emulator, endpoints are InService
    as soon as they are created — and stops at what waits for a person; one status patch."""
    from modeldeploy.reconcile.types import Timing

    resource.memo["timing"] = Timing(chain=30)
    invoke_results([{"Body": "0.73\n", "ContentType": "text/csv"}])
    resource.raw["spec"]["approval"]["approvedVersion"] = 1
    resource.call(handlers.on_change)
    assert resource.status["phase"] == "AwaitingPromotion"  # from nothing, in one call
    assert resource.status["staging"]["smokeTest"]["passed"] is True
    assert [w.get("phase") for w in resource.writes] == ["AwaitingPromotion"]  # one write
    reasons = [e.reason for e in resource.events]
    for step in ("GroupReady", "Registered", "Approved", "DeployingStaging", "SmokeTestPassed"):
        assert step in reasons  # each pass's Events, in order
    assert reasons.index("Registered") < reasons.index("DeployingStaging")
    # Phases: only the one the chain ends in, last; none passed through, none said twice.
    assert reasons[-1] == "AwaitingPromotion"
    assert not {"Registering", "PendingApproval", "Testing"} & set(reasons), reasons
    assert len(reasons) == len(set(reasons)), reasons

    # Without chaining one call is one pass, one step.
    resource.memo["timing"] = Timing(chain=0)
    resource.raw["spec"]["production"]["promotedVersion"] = 1
    resource.call(handlers.on_change)
    assert resource.status["phase"] == "Promoting"


def test_invalid_spec_is_reported_and_stalls(providers):
    res = Resource(
        {"modelPackageGroup": {"name": "churn"}, "approval": {"policy": "Automatic"}},
        providers=providers,
    )
    res.call(handlers.on_change)
    assert res.status["phase"] == "Failed"
    assert res.condition("Stalled") == ("True", "InvalidSpec")
    assert "spec.approval" in res.status["message"]
    assert [e.reason for e in res.events] == ["InvalidSpec"]
    res.call(handlers.on_change)  # the same generation: no second Event
    assert [e.reason for e in res.events] == ["InvalidSpec"]


def test_incompatible_artifact_stalls_until_the_spec_changes(resource, providers):
    resource.raw["spec"]["model"]["frameworkVersion"] = "1.7-1"
    resource.reconcile_until("Failed")
    assert resource.condition("Stalled") == ("True", "RegistrationFailed")
    message = resource.status["message"]
    assert "1.7" in message and "3.2" in message
    calls = count_calls(providers, resource.raw["spec"])
    resource.call(handlers.on_change)
    assert not [c for c in calls if c.startswith(MUTATING)]  # no retry of the same input
    resource.edit_spec(lambda s: s["model"].update(frameworkVersion="3.2-0"))
    resource.reconcile_until("PendingApproval")


def test_delete_honours_deletion_policy(resource, providers, invoke_results, sagemaker_client):
    resource.raw["spec"]["approval"]["approvedVersion"] = 1
    resource.raw["spec"]["staging"].pop("smokeTest")
    resource.reconcile_until("AwaitingPromotion")
    endpoint = resource.status["staging"]["endpointName"]

    retained = Resource(copy.deepcopy(resource.raw["spec"]), providers=providers)
    retained.raw["status"] = copy.deepcopy(resource.status)
    retained.raw["spec"]["deletionPolicy"] = "Retain"
    retained.call(handlers.on_delete)
    assert sagemaker_client.describe_endpoint(EndpointName=endpoint)["EndpointStatus"]

    for _ in range(5):
        try:
            resource.call(handlers.on_delete)
            break
        except kopf.TemporaryError:
            continue
    names = [e["EndpointName"] for e in sagemaker_client.list_endpoints()["Endpoints"]]
    assert endpoint not in names


def test_status_patch_removes_nested_keys():
    old = {"latestVersion": {"version": 1, "approvalDescription": "auc 0.8", "metrics": {"f": 1}}}
    new = {"latestVersion": {"version": 2, "metrics": {"auc": 0.99}}, "phase": "Registering"}
    assert handlers.status_patch(old, new) == {
        "latestVersion": {
            "version": 2,
            "approvalDescription": None,
            "metrics": {"auc": 0.99, "f": None},
        },
        "phase": "Registering",
    }


def test_unreadable_remote_state_stalls_with_a_message(providers, sagemaker_client, role_arn):
    # A version registered by a pipeline whose evaluation file is gone: the operator cannot
    # read its metrics, so it says so instead of failing the handler over and over.
    sagemaker_client.create_model_package_group(ModelPackageGroupName="pipeline")
    sagemaker_client.create_model_package(
        ModelPackageGroupName="pipeline",
        ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": "s3://nowhere/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {"ContentType": "application/json", "S3Uri": "s3://nowhere/e.json"}
            }
        },
    )
    res = Resource(
        {
            "provider": "sagemaker",
            "region": "us-east-1",
            "roleArn": role_arn,
            "modelPackageGroup": {"name": "pipeline"},
        },
        providers=providers,
    )
    res.call(handlers.on_change)
    assert res.status["phase"] == "Failed"
    assert res.condition("Stalled") == ("True", "RemoteError")
    assert "s3://nowhere/e.json" in res.status["message"]
    res.call(handlers.on_change)
    assert [e.reason for e in res.events] == ["RemoteError"]  # one Event, not one per pass


def invocations(providers: ProviderFactory, spec: dict) -> list[str]:
    """Every InvokeEndpoint the provider makes from now on (the smoke test's requests)."""
    from modeldeploy.spec import parse_spec

    calls: list[str] = []
    runtime = providers.get(parse_spec(spec)).hosting.runtime
    runtime.meta.events.register("before-call.*", lambda model, **_: calls.append(model.name))
    return calls


def test_smoke_test_with_a_wrong_answer_stalls_and_blocks_promotion(
    resource, providers, invoke_results
):
    # The emulator answers InvokeEndpoint with this canned body: two scores for one row.
    invoke_results([{"Body": "0.1\n0.2\n", "ContentType": "text/csv"}])
    calls = invocations(providers, resource.raw["spec"])
    resource.raw["spec"]["approval"]["approvedVersion"] = 1
    resource.raw["spec"]["production"] = {"promotion": "Automatic"}
    resource.reconcile_until("Failed")
    assert resource.condition("Stalled") == ("True", "SmokeTestFailed")
    assert "expected 1 predictions, got 2" in resource.status["message"]
    assert calls == ["InvokeEndpoint"]  # a wrong answer is not asked again
    assert "production" not in resource.status or not resource.status["production"].get("version")
    assert "SmokeTestFailed" in [e.reason for e in resource.events if e.type == "Warning"]


def test_a_smoke_test_only_too_slow_asks_three_times(resource, providers, invoke_results):
    # Well-formed answers, but no HTTP round trip takes under 1 ms: the test asks again (a
    # first request after a cold start may be slow), three times in all, and then fails.
    invoke_results([{"Body": "0.5\n", "ContentType": "text/csv"}])
    calls = invocations(providers, resource.raw["spec"])
    resource.raw["spec"]["staging"]["smokeTest"]["maxLatencyMs"] = 1
    resource.raw["spec"]["approval"]["approvedVersion"] = 1
    resource.reconcile_until("Failed")
    assert "exceeds maxLatencyMs 1" in resource.status["message"]
    assert calls == ["InvokeEndpoint"] * 3
