"""The sagemaker provider over HTTP against the AWS emulator (moto in server mode): what is
particular to it. What every provider must do is tests/test_provider_contract.py.

Where the emulator differs from SageMaker, the test says so. botocore's Stubber appears only
for what the emulator lacks: UpdateEndpoint and the Creating/Updating/Failed endpoint states
(its endpoints are InService at once).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

import boto3
import pytest
import xgboost as xgb
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from emulator import REGION, ROLE_ARN
from providers import deploy_request, fresh_sagemaker_provider, recorded, steady_hint

from modeldeploy import naming
from modeldeploy.artifacts import compat
from modeldeploy.providers.errors import TerminalError, TransientError, from_aws
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.providers.sagemaker import provider as provider_module
from modeldeploy.providers.sagemaker.registry import DIGEST_KEY
from modeldeploy.remote import (
    APPROVED,
    PENDING,
    DeployRequest,
    ModelVersion,
    ObserveHint,
    RecordedStage,
)
from modeldeploy.spec import ApprovalSpec, ModelDeploymentSpec, ModelPackageGroupSpec, parse_spec

NS, NAME, GROUP = "ml", "churn", "churn-xgboost"
NAME_RE = naming.NAME_PATTERN
NO_HINT = ObserveHint()  # what status knows before the first pass


def make_spec(artifact: str | None = None, **model: object) -> ModelDeploymentSpec:
    raw: dict = {
        "provider": "sagemaker",
        "region": REGION,
        "roleArn": ROLE_ARN,
        "modelPackageGroup": {"name": GROUP, "description": "Churn classifier"},
        "staging": {"instanceType": "ml.m5.large", "dataCapturePercent": 100},
        "production": {"instanceType": "ml.m5.xlarge", "instanceCount": 2},
    }
    if artifact:
        raw["model"] = {"artifact": artifact, **model}
    return parse_spec(raw)


def seeing_everything(sagemaker_client, runtime_client, s3_client) -> SageMakerProvider:
    # Views of age 0: every observe sees what the tests wrote behind the provider's back (the
    # views' own behaviour is tested in test_sagemaker_views.py).
    return SageMakerProvider(
        REGION,
        ROLE_ARN,
        sagemaker_client=sagemaker_client,
        runtime_client=runtime_client,
        s3_client=s3_client,
        view_max_age=0,
    )


@pytest.fixture
def provider(sagemaker_client, runtime_client, s3_client) -> SageMakerProvider:
    return seeing_everything(sagemaker_client, runtime_client, s3_client)


@pytest.fixture
def restarted(provider: SageMakerProvider) -> Callable[[], SageMakerProvider]:
    """A new provider instance with fresh clients: what an operator restart looks like."""

    def make() -> SageMakerProvider:
        return fresh_sagemaker_provider(boto3.session.Session(), REGION, ROLE_ARN)

    return make


def request_for(
    version: ModelVersion, stage: str = "staging", *, capture: int = 0, dest: str | None = None
) -> DeployRequest:
    itype, count = ("ml.m5.large", 1) if stage == "staging" else ("ml.m5.xlarge", 2)
    return deploy_request(
        version,
        naming.endpoint_name(NS, NAME, stage),
        stage=stage,
        instance_type=itype,
        count=count,
        capture=capture,
        dest=dest,
    )


def names(sm, what: str) -> list[str]:
    if what == "models":
        return sorted(m["ModelName"] for m in sm.list_models(MaxResults=100)["Models"])
    if what == "configs":
        page = sm.list_endpoint_configs(MaxResults=100)["EndpointConfigs"]
        return sorted(c["EndpointConfigName"] for c in page)
    return sorted(e["EndpointName"] for e in sm.list_endpoints(MaxResults=100)["Endpoints"])


def registered_approved(provider: SageMakerProvider, artifact: str) -> ModelVersion:
    spec = make_spec(artifact, frameworkVersion="3.2-0", metrics={"auc": 0.97})
    provider.registry.ensure_group(GROUP, None)
    version = provider.registry.register_version(spec)
    provider.registry.set_approval(version.arn, APPROVED, "test")
    return version


# -- naming (pure) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "name"),
    [
        ("default", "churn"),
        ("team-a", "fraud.detector.v2"),
        ("n" * 63, "x" * 253),
        ("a", "b"),
    ],
)
def test_names_follow_sagemaker_rules(namespace: str, name: str) -> None:
    for stage in ("staging", "production"):
        endpoint = naming.endpoint_name(namespace, name, stage)
        assert NAME_RE.match(endpoint) and len(endpoint) <= naming.MAX_ENDPOINT
        assert endpoint == naming.endpoint_name(namespace, name, stage)  # deterministic
        assert endpoint.startswith(naming.endpoint_prefix(namespace, name) + "-")
        config = naming.config_name(endpoint, {"version": "arn:x/1", "count": 1})
        model = naming.model_name(endpoint, "arn:x/1")
        for child in (config, model):
            assert NAME_RE.match(child) and len(child) <= 63
            assert child.startswith(endpoint + "-")


PAIRS = [("a-b", "c"), ("a", "b-c"), ("a", "b.c"), ("n" * 63, "x" * 250 + "1")]
PAIRS += [("n" * 63, "x" * 250 + "2")]  # differs only past where names are truncated


def test_names_are_unique_per_resource_and_stage() -> None:
    endpoints = {
        naming.endpoint_name(ns, n, stage) for ns, n in PAIRS for stage in ("staging", "production")
    }
    assert len(endpoints) == 10
    # No resource's prefix finds another resource's endpoints with ListEndpoints NameContains.
    prefix = naming.endpoint_prefix("a", "b-c")
    assert [e for e in endpoints if prefix in e] == [
        e for e in endpoints if e.startswith(prefix + "-")
    ]
    with pytest.raises(ValueError, match="unknown stage"):
        naming.endpoint_name("a", "b", "canary")


def test_child_names_change_with_content_only() -> None:
    endpoint = naming.endpoint_name(NS, NAME, "staging")
    first = naming.config_name(endpoint, {"version": "arn/1", "instanceCount": 1})
    assert first == naming.config_name(endpoint, {"instanceCount": 1, "version": "arn/1"})
    assert first != naming.config_name(endpoint, {"version": "arn/1", "instanceCount": 2})
    model = naming.model_name(endpoint, "arn/1")
    assert model != naming.model_name(endpoint, "arn/2")


# -- errors ---------------------------------------------------------------------------------------


def client_error(code: str, status: int, message: str = "boom") -> ClientError:
    body = {"Error": {"Code": code, "Message": message}}
    body["ResponseMetadata"] = {"HTTPStatusCode": status}  # type: ignore[assignment]
    return ClientError(body, "DescribeEndpoint")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ThrottlingException", 400, TransientError),
        ("InternalFailure", 500, TransientError),
        ("ServiceUnavailable", 503, TransientError),
        ("AccessDeniedException", 400, TerminalError),
        ("ValidationException", 400, TerminalError),
        ("ResourceLimitExceeded", 400, TerminalError),
    ],
)
def test_aws_errors_map_to_transient_or_terminal(code: str, status: int, kind: type) -> None:
    err = from_aws(client_error(code, status, "SageMaker says no"), "DescribeEndpoint x")
    assert type(err) is kind
    assert "SageMaker says no" in str(err) and code in str(err)


def test_unreachable_aws_is_transient(aws_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from emulator import free_port

    # A real connection refused on loopback, through the provider's default clients.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(TransientError, match="DescribeModelPackageGroup"):
        SageMakerProvider(REGION, ROLE_ARN).observe(make_spec(), NO_HINT, namespace=NS, name=NAME)


def test_one_provider_serves_the_environment_region_named_or_not(
    aws_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from modeldeploy.providers import ProviderFactory

    monkeypatch.setenv("AWS_REGION", REGION)
    factory = ProviderFactory(default="sagemaker")
    factory.warm()  # built in the background at start, before any resource asks
    deadline = time.monotonic() + 30
    while not factory.built() and time.monotonic() < deadline:
        time.sleep(0.05)
    (warmed,) = factory.built()
    unnamed = make_spec().model_copy(update={"region": None})
    assert factory.get(make_spec()) is factory.get(unnamed) is warmed
    assert ProviderFactory(default="local").warm() is None  # nothing to warm: no thread
    other = make_spec().model_copy(update={"region": "eu-west-1"})
    assert factory.get(other) is not warmed


# -- registry -------------------------------------------------------------------------------------


def test_default_clients_honour_aws_endpoint_url(aws_env, sagemaker_client) -> None:
    arn = SageMakerProvider(REGION, ROLE_ARN).registry.ensure_group(GROUP, None)
    assert (
        sagemaker_client.describe_model_package_group(ModelPackageGroupName=GROUP)[
            "ModelPackageGroupArn"
        ]
        == arn
    )


def test_group_is_created_once_with_its_description(provider, sagemaker_client) -> None:
    with recorded(sagemaker_client) as calls:
        arn = provider.registry.ensure_group(GROUP, "Churn classifier")
        assert provider.registry.ensure_group(GROUP, "Churn classifier") == arn
    assert calls.count("CreateModelPackageGroup") == 1
    groups = sagemaker_client.list_model_package_groups()["ModelPackageGroupSummaryList"]
    assert [(g["ModelPackageGroupName"], g["ModelPackageGroupArn"]) for g in groups] == [
        (GROUP, arn)
    ]
    desc = sagemaker_client.describe_model_package_group(ModelPackageGroupName=GROUP)
    assert desc["ModelPackageGroupDescription"] == "Churn classifier"


def test_register_gives_pending_approval_explicitly(
    provider, sagemaker_client, model_artifact
) -> None:
    spec = make_spec(model_artifact, frameworkVersion="3.2-0")
    provider.registry.ensure_group(GROUP, None)
    sent: list[dict] = []
    sagemaker_client.meta.events.register(
        "provide-client-params.sagemaker.CreateModelPackage",
        lambda params, **_: sent.append(dict(params)),
    )
    version = provider.registry.register_version(spec)
    assert len(sent) == 1
    params = sent[0]
    assert params["ModelApprovalStatus"] == "PendingManualApproval"
    assert re.fullmatch(r"[a-zA-Z0-9-]{1,36}", params["ClientToken"])
    desc = sagemaker_client.describe_model_package(ModelPackageName=version.arn)
    assert desc["ModelApprovalStatus"] == PENDING
    container = desc["InferenceSpecification"]["Containers"][0]
    assert container == {"Image": compat.image_uri(REGION, "3.2-0"), "ModelDataUrl": model_artifact}
    assert "sagemaker-xgboost:3.2-0" in container["Image"]
    inference = desc["InferenceSpecification"]
    assert inference["SupportedContentTypes"] == ["text/csv", "text/libsvm"]
    assert "application/json" in inference["SupportedResponseMIMETypes"]
    assert inference["SupportedRealtimeInferenceInstanceTypes"] == ["ml.m5.large", "ml.m5.xlarge"]
    props = desc["CustomerMetadataProperties"]
    assert props[DIGEST_KEY] == version.artifact_digest
    assert props["modeldeploy.dev/framework-version"] == "3.2-0"
    assert props["modeldeploy.dev/xgboost-version"] == xgb.__version__
    # The emulator also lowercases the group name in the version ARN, as SageMaker does.
    assert version.arn.endswith(f"model-package/{GROUP.lower()}/1")


def test_frameworkless_spec_gets_the_matching_image(provider, model_artifact) -> None:
    spec = make_spec(model_artifact)
    provider.registry.ensure_group(GROUP, None)
    assert "sagemaker-xgboost:3.2-0" in provider.registry.register_version(spec).image


def test_metrics_from_an_s3_evaluation_file(
    provider, restarted, sagemaker_client, model_artifact, upload
) -> None:
    report = {
        "binary_classification_metrics": {
            "auc": {"value": 0.968, "standard_deviation": "NaN"},
            "accuracy": {"value": 0.93, "standard_deviation": "NaN"},
        }
    }
    metrics_uri = upload("churn/1/evaluation.json", json.dumps(report).encode())
    spec = make_spec(model_artifact, metrics=metrics_uri)
    provider.registry.ensure_group(GROUP, None)
    version = provider.registry.register_version(spec)
    assert version.metrics == {"auc": 0.968, "accuracy": 0.93}
    desc = sagemaker_client.describe_model_package(ModelPackageName=version.arn)
    assert desc["ModelMetrics"]["ModelQuality"]["Statistics"] == {
        "ContentType": "application/json",
        "S3Uri": metrics_uri,
    }
    assert desc["CustomerMetadataProperties"]["metric.auc"] == "0.968"
    observed = restarted().observe(spec, NO_HINT, namespace=NS, name=NAME)
    assert observed.latest.metrics == {"auc": 0.968, "accuracy": 0.93}


# -- observe --------------------------------------------------------------------------------------


def test_observe_reads_the_config_while_a_deployment_is_in_flight(
    provider, sagemaker_client, model_artifact
) -> None:
    version = registered_approved(provider, model_artifact)
    action = request_for(version)
    provider.hosting.deploy(action)
    spec = make_spec()
    steady = steady_hint(provider.observe(spec, NO_HINT, namespace=NS, name=NAME))
    # Status records the endpoint moving from an old config to this one: not settled.
    in_flight = dataclasses.replace(steady, staging=RecordedStage(action.endpoint_name))
    with recorded(sagemaker_client) as calls:
        observed = provider.observe(spec, in_flight, namespace=NS, name=NAME)
    assert "DescribeEndpoint" in calls
    assert observed.staging.config_name == action.config_name


def test_observe_sees_a_new_version_registered_elsewhere(
    provider, sagemaker_client, model_artifact, upload
) -> None:
    version = registered_approved(provider, model_artifact)
    spec = make_spec()
    hint = steady_hint(provider.observe(spec, NO_HINT, namespace=NS, name=NAME))
    # A training pipeline registers version 2 with its evaluation report and no metadata of ours.
    report = upload("pipeline/evaluation.json", json.dumps({"auc": 0.99}).encode())
    sagemaker_client.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus=PENDING,
        InferenceSpecification={
            "Containers": [{"Image": version.image, "ModelDataUrl": model_artifact}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        ModelMetrics={
            "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": report}}
        },
    )
    observed = provider.observe(spec, hint, namespace=NS, name=NAME)
    assert [v.version for v in observed.versions] == [2, 1]
    assert observed.latest.approval_status == PENDING
    assert observed.latest.metrics == {"auc": 0.99}
    assert observed.version(1).approval_status == APPROVED


def test_observe_describes_referenced_versions_off_the_first_page(
    sagemaker_client, runtime_client, s3_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provider_module, "LIST_PAGE", 2)  # read when a provider is made
    provider = seeing_everything(sagemaker_client, runtime_client, s3_client)
    spec = make_spec()
    provider.registry.ensure_group(GROUP, None)
    for n in range(4):
        sagemaker_client.create_model_package(
            ModelPackageGroupName=GROUP,
            ModelApprovalStatus=APPROVED if n == 0 else PENDING,
            InferenceSpecification={
                "Containers": [{"Image": "img", "ModelDataUrl": f"s3://b/{n}.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
        )
    wanted = spec.model_copy(update={"approval": ApprovalSpec(approvedVersion=1)})
    # Status refers to the versions the spec names (approvedVersion 1).
    hint = ObserveHint(versions=frozenset({1}))
    observed = provider.observe(wanted, hint, namespace=NS, name=NAME)
    assert [v.version for v in observed.versions] == [4, 3, 1]
    assert observed.version(1).approval_status == APPROVED
    assert observed.version(1).artifact == "s3://b/0.tar.gz"


# -- hosting --------------------------------------------------------------------------------------


def test_deploy_creates_model_config_and_endpoint(
    provider, sagemaker_client, model_artifact
) -> None:
    version = registered_approved(provider, model_artifact)
    action = request_for(version, capture=100)
    provider.hosting.deploy(action)

    model = naming.model_name(action.endpoint_name, version.arn)
    assert names(sagemaker_client, "models") == [model]
    assert names(sagemaker_client, "configs") == [action.config_name]
    assert names(sagemaker_client, "endpoints") == [action.endpoint_name]
    described = sagemaker_client.describe_model(ModelName=model)
    # Created from the versioned package, which carries the image and the artifact.
    assert described["Containers"] == [{"ModelPackageName": version.arn}]
    assert described["ExecutionRoleArn"] == ROLE_ARN
    config = sagemaker_client.describe_endpoint_config(EndpointConfigName=action.config_name)
    variant = config["ProductionVariants"][0]
    assert (variant["ModelName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        model,
        "ml.m5.large",
        1,
    )
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] and capture["InitialSamplingPercentage"] == 100
    assert capture["DestinationS3Uri"] == (
        f"s3://sagemaker-{REGION}-123456789012/modeldeploy/datacapture"
    )
    tags = sagemaker_client.list_tags(ResourceArn=config["EndpointConfigArn"])["Tags"]
    assert {"Key": "modeldeploy.dev/version", "Value": str(version.version)} in tags
    endpoint = provider.hosting.describe(action.endpoint_name)
    assert (endpoint.status, endpoint.config_name) == ("InService", action.config_name)


def test_deploy_without_capture_and_with_own_destination(
    provider, sagemaker_client, model_artifact
) -> None:
    version = registered_approved(provider, model_artifact)
    plain = request_for(version, "production")
    provider.hosting.deploy(plain)
    config = sagemaker_client.describe_endpoint_config(EndpointConfigName=plain.config_name)
    assert not config.get("DataCaptureConfig")  # the emulator answers {} for none
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.m5.xlarge"
    captured = request_for(version, capture=20, dest="s3://captures/churn")
    provider.hosting.deploy(captured)
    config = sagemaker_client.describe_endpoint_config(EndpointConfigName=captured.config_name)
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == "s3://captures/churn"
    assert config["DataCaptureConfig"]["InitialSamplingPercentage"] == 20


def test_delete_removes_endpoint_configs_and_models(
    provider, sagemaker_client, model_artifact
) -> None:
    version = registered_approved(provider, model_artifact)
    staging, production = request_for(version), request_for(version, "production")
    provider.hosting.deploy(staging)
    provider.hosting.deploy(production)
    # A config left from an earlier version of staging goes too.
    old_config = naming.config_name(staging.endpoint_name, {"version": "an earlier one"})
    variant = sagemaker_client.describe_endpoint_config(EndpointConfigName=staging.config_name)[
        "ProductionVariants"
    ]
    sagemaker_client.create_endpoint_config(
        EndpointConfigName=old_config, ProductionVariants=variant
    )
    assert provider.hosting.delete(staging.endpoint_name) is True
    leftovers = [
        n
        for what in ("models", "configs", "endpoints")
        for n in names(sagemaker_client, what)
        if n.startswith(staging.endpoint_name)
    ]
    assert leftovers == []
    # Production's config and model are untouched.
    assert names(sagemaker_client, "configs") == [production.config_name]


# -- what the emulator lacks: Stubber -------------------------------------------------------------


def stubbed(session, runtime_client, s3_client) -> tuple[SageMakerProvider, Stubber]:
    client = session.client(
        "sagemaker",
        region_name=REGION,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    provider = SageMakerProvider(
        REGION,
        ROLE_ARN,
        sagemaker_client=client,
        runtime_client=runtime_client,
        s3_client=s3_client,
        view_max_age=3600,  # one group listing, one region listing of endpoints
    )
    return provider, Stubber(client)


def test_a_group_created_since_observe_looked_is_read_again_not_claimed(
    aws_env, boto_session, runtime_client, s3_client
) -> None:
    # Stubber: SageMaker refuses a second CreateModelPackageGroup; the emulator overwrites.
    provider, stub = stubbed(boto_session, runtime_client, s3_client)
    missing = f"ModelPackageGroup {GROUP} does not exist."
    stub.add_client_error("describe_model_package_group", "ValidationException", missing)
    message = f"Model Package Group already exists: {GROUP}"
    stub.add_client_error("create_model_package_group", "ValidationException", message)
    with stub, pytest.raises(TransientError, match="the group exists now; looking again"):
        provider.registry.ensure_group(GROUP, None, owner=f"{NS}/{NAME}")


NOW = datetime(2026, 1, 1, tzinfo=UTC)
ARN = f"arn:aws:sagemaker:{REGION}:123456789012"
VERSION_ARN = f"{ARN}:model-package/{GROUP}/1"


def stub_observe_lists(stub: Stubber, endpoint_status: str) -> None:
    stub.add_response(
        "list_model_packages",
        {
            "ModelPackageSummaryList": [
                {
                    "ModelPackageGroupName": GROUP,
                    "ModelPackageVersion": 1,
                    "ModelPackageArn": VERSION_ARN,
                    "CreationTime": NOW,
                    "ModelPackageStatus": "Completed",
                    "ModelApprovalStatus": APPROVED,
                }
            ]
        },
    )
    stub.add_response(
        "list_endpoints",
        {
            "Endpoints": [
                {
                    "EndpointName": naming.endpoint_name(NS, NAME, "staging"),
                    "EndpointArn": f"{ARN}:endpoint/x",
                    "CreationTime": NOW,
                    "LastModifiedTime": NOW,
                    "EndpointStatus": endpoint_status,
                }
            ]
        },
        {"MaxResults": 100},
    )


def stub_describe_endpoint(stub: Stubber, status: str, config: str, reason: str = "") -> None:
    body = {
        "EndpointName": naming.endpoint_name(NS, NAME, "staging"),
        "EndpointArn": f"{ARN}:endpoint/x",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
    }
    if reason:
        body["FailureReason"] = reason
    stub.add_response("describe_endpoint", body)


def stub_hint() -> ObserveHint:
    """Status of a staging endpoint moving from cfg-1 to cfg-2 (so not settled)."""
    return ObserveHint(
        group_arn="arn:group",
        group_owner=f"{NS}/{NAME}",  # status recorded the resource itself as the owner
        latest=ModelVersion(1, VERSION_ARN, APPROVED),
        versions=frozenset({1}),
        staging=RecordedStage(naming.endpoint_name(NS, NAME, "staging")),
    )


@pytest.mark.parametrize("transition", ["Creating", "Updating", "Failed"])
def test_observe_describes_transitional_and_failed_endpoints(
    aws_env, boto_session, runtime_client, s3_client, transition: str
) -> None:
    # Stubber: the emulator's endpoints are InService at once; it has no Creating, Updating
    # or Failed state, nor a FailureReason.
    provider, stub = stubbed(boto_session, runtime_client, s3_client)
    stub_observe_lists(stub, transition)
    reason = "ping health check failed" if transition == "Failed" else ""
    stub_describe_endpoint(stub, transition, "cfg-2", reason)
    with stub:
        observed = provider.observe(make_spec(), stub_hint(), namespace=NS, name=NAME)
        stub.assert_no_pending_responses()
    assert observed.staging.status == transition
    assert observed.staging.config_name == "cfg-2"
    assert observed.staging.failure_reason == reason
    assert observed.production is None


def stub_region_endpoints(stub: Stubber, *names: str) -> None:
    """The region listing the endpoints view makes before its first answer."""
    endpoints = [
        {
            "EndpointName": name,
            "EndpointArn": f"{ARN}:endpoint/{name}",
            "CreationTime": NOW,
            "LastModifiedTime": NOW,
            "EndpointStatus": "InService",
        }
        for name in names
    ]
    stub.add_response("list_endpoints", {"Endpoints": endpoints}, {"MaxResults": 100})


def stub_model_and_config_exist(stub: Stubber, action: DeployRequest) -> None:
    """SageMaker refuses to create them again: "already existing" is success."""
    model = naming.model_name(action.endpoint_name, action.version.arn)
    for what, noun, name in (
        ("model", "model", model),
        ("endpoint_config", "endpoint configuration", action.config_name),
    ):
        refusal = f'Cannot create already existing {noun} "{ARN}:{what}/{name}".'
        stub.add_client_error(f"create_{what}", "ValidationException", refusal)


def updated_request() -> DeployRequest:
    version = ModelVersion(2, VERSION_ARN[:-1] + "2", APPROVED, image="img", artifact="s3://b/m")
    return request_for(version)


def test_deploy_updates_an_existing_endpoint(
    aws_env, boto_session, runtime_client, s3_client
) -> None:
    # Stubber: the emulator lacks UpdateEndpoint (it answers HTTP 500; see the next test).
    provider, stub = stubbed(boto_session, runtime_client, s3_client)
    action = updated_request()
    stub_region_endpoints(stub, action.endpoint_name)  # listed: deploy describes it
    stub_describe_endpoint(stub, "InService", "cfg-of-version-1")
    stub_model_and_config_exist(stub, action)
    stub.add_response(
        "update_endpoint",
        {"EndpointArn": f"{ARN}:endpoint/{action.endpoint_name}"},
        {"EndpointName": action.endpoint_name, "EndpointConfigName": action.config_name},
    )
    with stub:
        provider.hosting.deploy(action)
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("state", "error"), [("Updating", TransientError), ("Failed", TerminalError)]
)
def test_deploy_waits_for_or_refuses_a_busy_endpoint(
    aws_env, boto_session, runtime_client, s3_client, state: str, error: type
) -> None:
    # Stubber: the emulator has no Updating or Failed endpoints.
    provider, stub = stubbed(boto_session, runtime_client, s3_client)
    action = updated_request()
    stub_region_endpoints(stub, action.endpoint_name)
    stub_describe_endpoint(stub, state, "cfg-of-version-1", "boom" if state == "Failed" else "")
    with stub, pytest.raises(error, match=f"(?i){state}"):
        provider.hosting.deploy(action)


def test_emulator_lacks_update_endpoint(provider, model_artifact) -> None:
    # Documents why the update path is stubbed: UpdateEndpoint is HTTP 500 in the emulator,
    # which the provider rightly reports as transient. If this starts failing, drop the stub.
    version = registered_approved(provider, model_artifact)
    provider.hosting.deploy(request_for(version))
    with pytest.raises(TransientError, match="UpdateEndpoint"):
        provider.hosting.deploy(request_for(version, capture=50))


# -- answers lost on the way back (tests/test_fault_proxy.py finds these against the emulator) ---


def test_a_create_the_sdk_retried_after_a_lost_answer_is_done(
    aws_env, boto_session, runtime_client, s3_client
) -> None:
    # Stubber: SageMaker refuses a second create of the same name, which is what the SDK's
    # retry of a create whose answer was lost meets; the emulator overwrites instead. These
    # refusals used to be terminal, stalling the resource until its spec changed.
    provider, stub = stubbed(boto_session, runtime_client, s3_client)
    action = request_for(ModelVersion(1, VERSION_ARN, APPROVED))
    model = naming.model_name(action.endpoint_name, action.version.arn)
    stub_region_endpoints(stub)  # listed before the create whose answer was lost
    for what, noun, name in (
        ("model", "model", model),
        ("endpoint_config", "endpoint configuration", action.config_name),
        ("endpoint", "endpoint", action.endpoint_name),
    ):
        refusal = f'Cannot create already existing {noun} "{ARN}:{what}/{name}".'
        stub.add_client_error(f"create_{what}", "ValidationException", refusal)
    with stub:
        provider.hosting.deploy(action)
        stub.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("now", "error"), [("Updating", TransientError), ("InService", TerminalError)]
)
def test_an_update_refused_as_in_progress_waits_for_it(
    aws_env, boto_session, runtime_client, s3_client, now: str, error: type
) -> None:
    # Stubber: the emulator lacks UpdateEndpoint. The SDK's retry of an update whose answer
    # was lost finds the endpoint Updating, and is refused: that is an update in flight.
    provider, stub = stubbed(boto_session, runtime_client, s3_client)
    action = updated_request()
    stub_region_endpoints(stub, action.endpoint_name)
    stub_describe_endpoint(stub, "InService", "cfg-of-version-1")
    stub_model_and_config_exist(stub, action)
    refusal = f'Cannot update in-progress endpoint "{ARN}:endpoint/{action.endpoint_name}".'
    stub.add_client_error("update_endpoint", "ValidationException", refusal)
    stub_describe_endpoint(stub, now, "cfg-of-version-1")
    with stub, pytest.raises(error, match="UpdateEndpoint"):
        provider.hosting.deploy(action)


def test_the_same_bytes_in_two_groups_have_two_client_tokens(
    provider, sagemaker_client, model_artifact
) -> None:
    # SageMaker answers a ClientToken it has seen with the version it created then: a token
    # of the bytes alone handed the second group the first group's version.
    tokens: list[str] = []
    sagemaker_client.meta.events.register(
        "provide-client-params.sagemaker.CreateModelPackage",
        lambda params, **_: tokens.append(params["ClientToken"]),
    )
    for group in (GROUP, "churn-copy"):
        spec = make_spec(model_artifact, frameworkVersion="3.2-0")
        spec = spec.model_copy(update={"modelPackageGroup": ModelPackageGroupSpec(name=group)})
        provider.registry.ensure_group(group, None)
        assert f"/{group.lower()}/1" in provider.registry.register_version(spec).arn
    assert len(set(tokens)) == 2
