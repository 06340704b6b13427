"""The sagemaker provider's shared views and caches, and when each is refreshed (issue 12).

Against the AWS emulator, with a clock the test moves: what is read from a view, what is listed
again, and which of this process's own writes go through without a call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from botocore.awsrequest import AWSResponse
from emulator import REGION, ROLE_ARN
from providers import deploy_request, recorded

from modeldeploy import naming
from modeldeploy.artifacts import guard
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.providers.sagemaker.groups import GroupsView
from modeldeploy.providers.sagemaker.hosting import SageMakerHosting
from modeldeploy.providers.sagemaker.listing import PAGE
from modeldeploy.providers.sagemaker.registry import SageMakerRegistry
from modeldeploy.providers.sagemaker.views import EndpointsView, VersionsView
from modeldeploy.remote import APPROVED, PENDING, EndpointStatus, ModelVersion, ObserveHint
from modeldeploy.spec import ModelDeploymentSpec, parse_spec

MAX_AGE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def views(sagemaker_client, clock: Clock) -> tuple[VersionsView, EndpointsView]:
    versions = VersionsView(sagemaker_client, limit=50, max_age=MAX_AGE, clock=clock)
    endpoints = EndpointsView(sagemaker_client, max_age=MAX_AGE, clock=clock)
    return versions, endpoints


@pytest.fixture
def registry(sagemaker_client, s3_client, views) -> SageMakerRegistry:
    return SageMakerRegistry(sagemaker_client, s3_client, REGION, views[0])


def spec_for(group: str, artifact: str) -> ModelDeploymentSpec:
    return parse_spec(
        {
            "provider": "sagemaker",
            "region": REGION,
            "roleArn": ROLE_ARN,
            "modelPackageGroup": {"name": group},
            "model": {"artifact": artifact, "frameworkVersion": "3.2-0"},
        }
    )


def add_version_behind_our_back(sagemaker_client, group: str) -> str:
    return sagemaker_client.create_model_package(
        ModelPackageGroupName=group,
        InferenceSpecification={
            "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
    )["ModelPackageArn"]


def numbers(summaries: list[dict]) -> list[int]:
    return [s["ModelPackageVersion"] for s in summaries]


def test_a_group_is_listed_once_then_read_from_the_view_until_it_is_too_old(
    sagemaker_client, registry: SageMakerRegistry, views, clock: Clock
) -> None:
    versions, _ = views
    for group in ("churn", "fraud"):
        registry.ensure_group(group, None)
        add_version_behind_our_back(sagemaker_client, group)
    with recorded(sagemaker_client) as calls:
        assert versions.versions("churn") == []  # the view's own write: created empty
        assert versions.versions("fraud") == []
    assert calls == []

    clock.now += MAX_AGE  # too old: one listing of the region refreshes both groups
    with recorded(sagemaker_client) as calls:
        assert numbers(versions.versions("churn")) == [1]
        assert numbers(versions.versions("fraud")) == [1]
    assert calls == ["ListModelPackages"]


def test_a_group_first_seen_is_listed_on_its_own(sagemaker_client, views) -> None:
    versions, _ = views
    sagemaker_client.create_model_package_group(ModelPackageGroupName="adopted")
    add_version_behind_our_back(sagemaker_client, "adopted")
    with recorded(sagemaker_client) as calls:
        assert numbers(versions.versions("adopted")) == [1]
        assert numbers(versions.versions("adopted")) == [1]
    assert calls == ["ListModelPackages"]


def test_own_registration_and_approval_go_through_without_a_listing(
    sagemaker_client, registry: SageMakerRegistry, views, model_artifact: str
) -> None:
    versions, _ = views
    registry.ensure_group("churn", None)
    version = registry.register_version(spec_for("churn", model_artifact))
    registry.describe(version.arn, PENDING)  # what observe does with a new latest version
    with recorded(sagemaker_client) as calls:
        listed = versions.versions("churn")
        assert [(s["ModelPackageVersion"], s["ModelApprovalStatus"]) for s in listed] == [
            (version.version, PENDING)
        ]
        registry.set_approval(version.arn, APPROVED, "by test")
        assert versions.versions("churn")[0]["ModelApprovalStatus"] == APPROVED
    # the approval's describe is the one observe made: only the update is sent
    assert calls == ["UpdateModelPackage"]


def test_a_write_made_while_the_region_is_listed_is_not_lost(
    sagemaker_client, registry: SageMakerRegistry, views, clock: Clock
) -> None:
    versions, _ = views
    registry.ensure_group("churn", None)
    clock.now += MAX_AGE
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/churn/7"

    def write_during_listing(**_: object) -> None:
        clock.now += 0.5
        versions.version_added("churn", arn, 7, PENDING)

    event = "before-call.sagemaker.ListModelPackages"
    sagemaker_client.meta.events.register(event, write_during_listing)
    try:
        assert numbers(versions.versions("churn")) == [7]  # the listing did not erase it
    finally:
        sagemaker_client.meta.events.unregister(event, write_during_listing)


def test_a_write_with_an_unknown_outcome_lists_the_group_again(
    sagemaker_client, registry: SageMakerRegistry, views
) -> None:
    versions, _ = views
    registry.ensure_group("churn", None)
    add_version_behind_our_back(sagemaker_client, "churn")  # as an unanswered create might
    versions.forget("churn")
    with recorded(sagemaker_client) as calls:
        assert numbers(versions.versions("churn")) == [1]
    assert calls == ["ListModelPackages"]


def test_an_approval_changed_elsewhere_is_described_again(
    sagemaker_client, registry: SageMakerRegistry, model_artifact: str
) -> None:
    registry.ensure_group("churn", None)
    version = registry.register_version(spec_for("churn", model_artifact))
    registry.describe(version.arn, PENDING)
    with recorded(sagemaker_client) as calls:
        assert registry.describe(version.arn, PENDING)["ModelApprovalStatus"] == PENDING
    assert calls == []  # kept while its approval is the listed one
    sagemaker_client.update_model_package(
        ModelPackageArn=version.arn, ModelApprovalStatus="Rejected"
    )
    with recorded(sagemaker_client) as calls:
        assert registry.describe(version.arn, "Rejected")["ModelApprovalStatus"] == "Rejected"
    assert calls == ["DescribeModelPackage"]


def count_inspections(monkeypatch: pytest.MonkeyPatch, seconds: float = 0.0) -> list[str]:
    """The artifacts inspected from now on (each taking at least `seconds`)."""
    inspected: list[str] = []
    real = guard.inspect_file

    def counting(path, **kwargs):
        inspected.append(str(path))
        time.sleep(seconds)
        return real(path, **kwargs)

    monkeypatch.setattr(guard, "inspect_file", counting)
    return inspected


def test_the_same_artifact_is_checked_once_until_its_bytes_change(
    registry: SageMakerRegistry,
    model_artifact: str,
    upload: Callable[[str, bytes], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inspected = count_inspections(monkeypatch)
    for group in ("churn", "churn-copy"):
        registry.ensure_group(group, None)
        registry.register_version(spec_for(group, model_artifact))
    assert len(inspected) == 1  # two resources, one download and inspection

    from conftest import build_model_tar

    key = model_artifact.split("/", 3)[3]
    upload(key, build_model_tar(rounds=4))  # new bytes at the same key: a new ETag
    registry.ensure_group("churn-3", None)
    registry.register_version(spec_for("churn-3", model_artifact))
    assert len(inspected) == 2

    # the same bytes under another key: downloaded (an ETag proves nothing across objects)
    # and digested, but not inspected again
    copy = upload("elsewhere/model.tar.gz", build_model_tar(rounds=4))
    registry.ensure_group("churn-4", None)
    assert registry.register_version(spec_for("churn-4", copy)).artifact == copy
    assert len(inspected) == 2


def test_resources_naming_the_same_bytes_at_once_share_one_inspection(
    registry: SageMakerRegistry,
    model_artifact: str,
    upload: Callable[[str, bytes], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from conftest import build_model_tar

    inspected = count_inspections(monkeypatch, seconds=0.5)  # the others arrive meanwhile
    groups = [f"same-bytes-{i}" for i in range(4)]
    artifacts = [upload(f"{g}/model.tar.gz", build_model_tar(rounds=3)) for g in groups]
    for group in groups:
        registry.ensure_group(group, None)
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(registry.register_version, map(spec_for, groups, artifacts)))
    assert len(inspected) == 1  # four downloads and digests, one inspection
    assert len({v.artifact_digest for v in versions}) == 1
    assert [v.artifact for v in versions] == artifacts


def test_endpoints_are_listed_once_for_every_resource_and_described_after_own_changes(
    sagemaker_client, runtime_client, views, clock: Clock, model_artifact: str
) -> None:
    _, endpoints = views
    hosting = SageMakerHosting(sagemaker_client, runtime_client, REGION, endpoints, ROLE_ARN)
    names = [naming.endpoint_name("ns", n, "staging") for n in ("a", "b")]
    sagemaker_client.create_model(
        ModelName="m", ExecutionRoleArn=ROLE_ARN, PrimaryContainer={"Image": "img"}
    )
    sagemaker_client.create_endpoint_config(
        EndpointConfigName="other",
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": "m",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sagemaker_client.create_endpoint(EndpointName="not-ours", EndpointConfigName="other")
    with recorded(sagemaker_client) as calls:
        assert [endpoints.listed_status(n) for n in names] == [None, None]
    assert calls == ["ListEndpoints"]
    assert endpoints.listed_status("not-ours") is None  # not kept: not the operator's naming

    registry = SageMakerRegistry(sagemaker_client, None, REGION, views[0])
    registry.ensure_group("churn", None)
    arn = add_version_behind_our_back(sagemaker_client, "churn")
    registry.set_approval(arn, APPROVED, "ok")
    request = deploy_request(ModelVersion(1, arn, APPROVED), names[0])
    with recorded(sagemaker_client) as calls:
        hosting.deploy(request)
    # the listing said it was not there: no describe before the create
    assert calls == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint"]
    assert endpoints.needs_describe(names[0])
    assert hosting.describe(names[0]).status == EndpointStatus.IN_SERVICE  # settled
    assert not endpoints.needs_describe(names[0])
    assert endpoints.listed_status(names[0]) == EndpointStatus.IN_SERVICE


def test_endpoints_just_created_are_seen_through_one_listing_of_recent_changes(
    sagemaker_client, runtime_client, views, clock: Clock
) -> None:
    versions, endpoints = views
    hosting = SageMakerHosting(sagemaker_client, runtime_client, REGION, endpoints, ROLE_ARN)
    registry = SageMakerRegistry(sagemaker_client, None, REGION, versions)
    registry.ensure_group("churn", None)
    arn = add_version_behind_our_back(sagemaker_client, "churn")
    registry.set_approval(arn, APPROVED, "ok")
    names = [naming.endpoint_name("ns", n, "staging") for n in ("a", "b", "c")]
    requests = [deploy_request(ModelVersion(1, arn, APPROVED), n) for n in names]
    for request in requests:
        hosting.deploy(request)

    listings: list[dict] = []
    hook = lambda params, **_: listings.append(params)  # noqa: E731
    sagemaker_client.meta.events.register("provide-client-params.sagemaker.ListEndpoints", hook)
    with recorded(sagemaker_client) as calls:
        seen = [endpoints.created_status(n) for n in names[:2]]
    assert calls == ["ListEndpoints"]  # one listing for both, no DescribeEndpoint
    assert seen == [(EndpointStatus.IN_SERVICE, r.config_name) for r in requests[:2]]
    # ... of what changed since the oldest create still settling, on the server's clock
    assert listings[0]["LastModifiedTimeAfter"] < datetime.now(UTC)
    assert not endpoints.needs_describe(names[0])  # settled: the region's view has it
    assert endpoints.listed_status(names[0]) == EndpointStatus.IN_SERVICE

    # Gone behind our back before a listing since its create shows it: described instead.
    sagemaker_client.delete_endpoint(EndpointName=names[2])
    clock.now += 1  # the listing above is too old now
    with recorded(sagemaker_client) as calls:
        assert endpoints.created_status(names[2]) is None
    assert calls == ["ListEndpoints"]
    assert endpoints.needs_describe(names[2])

    # Touched otherwise (an update, a delete, a create that met an existing endpoint): described.
    hosting.endpoints.touch(names[0])
    assert endpoints.created_status(names[0]) is None


def test_a_steady_observe_makes_no_call(
    sagemaker_client, runtime_client, s3_client, model_artifact: str
) -> None:
    provider = SageMakerProvider(
        REGION,
        sagemaker_client=sagemaker_client,
        runtime_client=runtime_client,
        s3_client=s3_client,
        view_max_age=MAX_AGE,
    )
    spec = spec_for("churn", model_artifact)
    arn = provider.registry.ensure_group("churn", None, owner="ns/churn")
    version = provider.registry.register_version(spec)
    provider.registry.set_approval(version.arn, APPROVED, "ok")
    hint = ObserveHint(group_arn=arn, group_owner="ns/churn")
    first = provider.observe(spec, hint, namespace="ns", name="churn")
    steady = ObserveHint(group_arn=arn, group_owner="ns/churn", latest=first.latest)
    with recorded(sagemaker_client) as calls:
        for _ in range(3):
            again = provider.observe(spec, steady, namespace="ns", name="churn")
    assert calls == []
    assert again.latest.approval_status == APPROVED


def test_a_group_observe_just_found_missing_is_created_without_a_second_look(
    sagemaker_client, registry: SageMakerRegistry
) -> None:
    with recorded(sagemaker_client) as calls:
        assert registry.group_arn("churn") is None  # what observe does
        registry.ensure_group("churn", None)
    assert calls == ["DescribeModelPackageGroup", "CreateModelPackageGroup"]
    with recorded(sagemaker_client) as calls:  # and an existing one is never created again
        registry.ensure_group("churn", None)
    # a second lookup within seconds: listing them all costs no more than describing it
    assert calls == ["ListModelPackageGroups"]


def test_groups_are_listed_once_for_a_burst_and_described_when_that_is_cheaper(
    sagemaker_client, registry: SageMakerRegistry, clock: Clock
) -> None:
    for i in range(PAGE + 1):  # two pages
        sagemaker_client.create_model_package_group(ModelPackageGroupName=f"g{i}")
    groups, describe = GroupsView(sagemaker_client, trust=5, clock=clock), registry.describe_group
    with recorded(sagemaker_client) as calls:
        assert groups.lookup("g0", describe).endswith("/g0")  # alone: described
        assert groups.lookup("g1", describe).endswith("/g1")  # a second at once: listed
        assert groups.lookup("g100", describe).endswith("/g100")
        assert groups.lookup("elsewhere", describe) is None  # missing, by the listing
        groups.created("new", "arn:new")  # this process's own create: in the view at once
        assert groups.lookup("new", describe) == "arn:new"
    assert calls == ["DescribeModelPackageGroup"] + ["ListModelPackageGroups"] * 2

    clock.now += 6  # the listing is no longer believed, and it cost two pages
    with recorded(sagemaker_client) as calls:
        assert groups.lookup("g5", describe).endswith("/g5")
    assert calls == ["DescribeModelPackageGroup"]
    with recorded(sagemaker_client) as calls:
        assert groups.lookup("g6", describe).endswith("/g6")  # two lookups now: listed
    assert calls == ["ListModelPackageGroups"] * 2


def test_a_role_that_may_not_list_groups_describes_them(
    sagemaker_client, registry: SageMakerRegistry, clock: Clock
) -> None:
    # The emulator enforces no IAM: the refusal is the answer SageMaker gives, made by a hook.
    refused = {"Error": {"Code": "AccessDeniedException", "Message": "not authorized"}}

    def deny(**_: object) -> tuple:
        return AWSResponse("", 400, {}, None), refused

    sagemaker_client.meta.events.register("before-call.sagemaker.ListModelPackageGroups", deny)
    sagemaker_client.create_model_package_group(ModelPackageGroupName="g0")
    groups, describe = GroupsView(sagemaker_client, trust=5, clock=clock), registry.describe_group
    try:
        with recorded(sagemaker_client) as calls:
            for _ in range(3):  # a burst: it tries a listing once, then only describes
                assert groups.lookup("g0", describe).endswith("/g0")
        listed = [c for c in calls if c == "ListModelPackageGroups"]
        assert (len(listed), calls.count("DescribeModelPackageGroup")) == (1, 3)
    finally:
        sagemaker_client.meta.events.unregister(
            "before-call.sagemaker.ListModelPackageGroups", deny
        )


def test_registering_into_a_group_created_here_lists_nothing_until_an_outcome_is_unknown(
    sagemaker_client, registry: SageMakerRegistry, views, model_artifact: str
) -> None:
    versions, _ = views
    registry.ensure_group("churn", None)
    with recorded(sagemaker_client) as calls:
        registry.register_version(spec_for("churn", model_artifact))
    assert "ListModelPackages" not in calls  # nothing registered here: nothing to find
    versions.forget("churn")  # as after a create whose answer was lost
    with recorded(sagemaker_client) as calls:
        again = registry.register_version(spec_for("churn", model_artifact))
    assert calls.count("ListModelPackages") == 1 and "CreateModelPackage" not in calls
    assert again.version == 1  # found by its digest: not registered twice


def test_a_region_listing_that_skipped_a_known_version_is_not_believed(
    sagemaker_client, registry: SageMakerRegistry, views, clock: Clock, model_artifact: str
) -> None:
    # Paging a listing while versions are created can skip some (the emulator's tokens are
    # positions in a growing list): seen at N>=100 as versions "lost" and registered again.
    versions, _ = views
    registry.ensure_group("churn", None)
    registry.register_version(spec_for("churn", model_artifact))
    clock.now += MAX_AGE

    region_listing: list[bool] = []

    def note(params, **_: object) -> None:
        region_listing.append("ModelPackageGroupName" not in params)

    def skip_churn(parsed, **_: object) -> None:
        if region_listing[-1]:
            summaries = parsed["ModelPackageSummaryList"]
            parsed["ModelPackageSummaryList"] = [
                s for s in summaries if s["ModelPackageGroupName"] != "churn"
            ]

    hooks = [
        ("before-parameter-build.sagemaker.ListModelPackages", note),
        ("after-call.sagemaker.ListModelPackages", skip_churn),
    ]
    for event, hook in hooks:
        sagemaker_client.meta.events.register(event, hook)
    try:
        with recorded(sagemaker_client) as calls:
            assert numbers(versions.versions("churn")) == [1]
    finally:
        for event, hook in hooks:
            sagemaker_client.meta.events.unregister(event, hook)
    assert region_listing == [True, False]
    assert calls == ["ListModelPackages", "ListModelPackages"]  # the region's, then its own
