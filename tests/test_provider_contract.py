"""What every provider does, one suite run over each: the `local` provider (its process hosting,
real `modeldeploy serve` servers) and the `sagemaker` provider against the AWS emulator.

Each provider comes with a `Harness`: how to build it again on the same remote state (an
operator restart), where to put an artifact, how to record the calls it makes (botocore's API
calls; the local provider's queries on its state) and which of those change something. What is
particular to one provider is in tests/test_sagemaker_provider.py and test_local_provider.py.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import xgboost as xgb
from botocore.awsrequest import AWSResponse
from conftest import build_model_tar
from emulator import REGION, ROLE_ARN
from providers import (
    STATE_WRITES,
    deploy_request,
    fresh_sagemaker_provider,
    recorded,
    state_calls,
    steady_hint,
)

from modeldeploy import naming
from modeldeploy.providers.errors import TerminalError, TransientError
from modeldeploy.providers.interface import Provider
from modeldeploy.providers.local import HOSTING_ENV, LocalProvider
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.remote import (
    APPROVED,
    PENDING,
    REJECTED,
    DeployRequest,
    Endpoint,
    EndpointStatus,
    ModelVersion,
    ObserveHint,
)
from modeldeploy.spec import ModelDeploymentSpec, parse_spec

NS, NAME, GROUP = "ml", "churn", "churn-xgboost"
NO_HINT = ObserveHint()  # what status knows before the first pass
AWS_WRITE = ("Create", "Update", "Delete", "Add", "Put")


@dataclass
class Harness:
    name: str
    make: Callable[[], Provider]  # a new provider on the same remote state: a restart
    spec_fields: dict  # what this provider's spec needs besides the group and the model
    upload: Callable[[str, bytes], str]  # (name, bytes) -> an artifact URI the provider reads
    missing: str  # an artifact URI with nothing behind it
    calls: Callable[[list[Provider]], AbstractContextManager[list[str]]]
    is_write: Callable[[str], bool]
    steady_reads: list[str]  # sorted: every call a steady observe makes
    answer: Callable[[str], None]  # what the endpoint will answer, where no model really runs
    s3_events: Callable[[Provider], Any]  # where a hook sees the S3 calls the registry makes
    provider: Provider = field(init=False)

    def __post_init__(self) -> None:
        self.provider = self.make()

    def spec(self, artifact: str | None = None, **model: object) -> ModelDeploymentSpec:
        raw: dict = {"modelPackageGroup": {"name": GROUP}, **self.spec_fields}
        if artifact:
            raw["model"] = {"artifact": artifact, **model}
        return parse_spec(raw)

    def observe(self, hint: ObserveHint = NO_HINT, provider: Provider | None = None):
        return (provider or self.provider).observe(self.spec(), hint, namespace=NS, name=NAME)

    def settle(self, name: str, config: str, timeout: float = 60) -> Endpoint:
        """The endpoint once it serves `config` (a local server takes a second to start)."""
        deadline = time.monotonic() + timeout
        while True:
            endpoint = self.provider.hosting.describe(name)
            if endpoint and (endpoint.status, endpoint.config_name) == ("InService", config):
                return endpoint
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never served {config}: {endpoint}")
            time.sleep(0.2)


def default_session_events() -> Any:
    """The local store makes its S3 client from boto3's default session when it needs one."""
    if boto3.DEFAULT_SESSION is None:
        boto3.setup_default_session()
    return boto3.DEFAULT_SESSION.events


def local_harness(root: Path) -> Iterator[Harness]:
    made: list[LocalProvider] = []

    def make() -> LocalProvider:
        made.append(LocalProvider(root))
        return made[-1]

    def upload(name: str, body: bytes) -> str:
        path = root.parent / "uploads" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return f"file://{path}"

    yield Harness(
        name="local",
        make=make,
        spec_fields={"provider": "local"},
        upload=upload,
        missing=f"file://{root.parent}/nowhere/model.tar.gz",
        calls=lambda providers: state_calls(*(p.state for p in providers)),
        is_write=lambda call: call in STATE_WRITES,
        # SQLite reads, and one /ping per serving endpoint.
        steady_reads=["endpoint", "endpoint", "group_arn", "versions"],
        answer=lambda body: None,  # a real server computes it
        s3_events=lambda provider: default_session_events(),
    )
    for provider in made:  # stop every server the test started
        for name in provider.hosting.names(""):
            provider.hosting.delete(name)


def sagemaker_harness(request: pytest.FixtureRequest) -> Harness:
    aws_env = request.getfixturevalue("aws_env")
    session = request.getfixturevalue("boto_session")
    upload = request.getfixturevalue("upload")
    bucket = request.getfixturevalue("bucket")

    def make() -> SageMakerProvider:
        return fresh_sagemaker_provider(session, REGION, ROLE_ARN)

    def calls(providers: list[SageMakerProvider]) -> AbstractContextManager[list[str]]:
        return recorded(*(c for p in providers for c in (p.registry.sm, p.registry.s3)))

    return Harness(
        name="sagemaker",
        make=make,
        spec_fields={"provider": "sagemaker", "region": REGION, "roleArn": ROLE_ARN},
        upload=upload,
        missing=f"s3://{bucket}/nowhere/model.tar.gz",
        calls=calls,
        is_write=lambda call: call.startswith(AWS_WRITE),
        steady_reads=["ListEndpoints", "ListModelPackages"],
        # The emulator runs no container: it answers what it is told to.
        answer=lambda body: aws_env.set_invoke_results([{"Body": body, "ContentType": "text/csv"}]),
        s3_events=lambda provider: provider.registry.s3.meta.events,
    )


@pytest.fixture(params=["local", pytest.param("sagemaker", marks=pytest.mark.emulator)])
def h(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[Harness]:
    if request.param == "sagemaker":
        yield sagemaker_harness(request)
        return
    monkeypatch.delenv(HOSTING_ENV, raising=False)  # process hosting
    yield from local_harness(tmp_path / "local")


# -- helpers ---------------------------------------------------------------------------------------


def register(h: Harness, body: bytes, key: str = "churn/1", **model: object) -> ModelVersion:
    """`body` registered as spec.model (frameworkVersion 3.2-0) in a group made for it."""
    spec = h.spec(h.upload(f"{key}/model.tar.gz", body), frameworkVersion="3.2-0", **model)
    h.provider.registry.ensure_group(GROUP, None)
    return h.provider.registry.register_version(spec)


def approved(h: Harness, body: bytes, key: str = "churn/1") -> ModelVersion:
    version = register(h, body, key, metrics={"auc": 0.97})
    h.provider.registry.set_approval(version.arn, APPROVED, "test")
    return version


def request_for(version: ModelVersion, stage: str = "staging") -> DeployRequest:
    itype, count = ("ml.m5.large", 1) if stage == "staging" else ("ml.m5.xlarge", 2)
    endpoint = naming.endpoint_name(NS, NAME, stage)
    return deploy_request(version, endpoint, stage=stage, instance_type=itype, count=count)


def deployed(h: Harness, request: DeployRequest) -> Endpoint:
    h.provider.hosting.deploy(request)
    return h.settle(request.endpoint_name, request.config_name)


def both_stages(h: Harness, body: bytes) -> tuple[DeployRequest, DeployRequest]:
    """`body`, registered and approved, serving on both stages."""
    version = approved(h, body)
    staging, production = request_for(version), request_for(version, "production")
    deployed(h, staging)
    deployed(h, production)
    return staging, production


def tar_of(member: str, data: bytes, *more: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name in (member, *more):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


# -- the registry ----------------------------------------------------------------------------------


def test_a_group_is_created_once(h: Harness) -> None:
    assert h.observe().group_arn is None
    arn = h.provider.registry.ensure_group(GROUP, "Churn classifier")
    assert h.provider.registry.ensure_group(GROUP, "Churn classifier") == arn
    assert h.make().registry.group_arn(GROUP) == arn  # after a restart
    observed = h.observe()
    assert (observed.group_arn, observed.versions) == (arn, ())


def test_a_group_keeps_the_owner_that_created_or_adopted_it(h: Harness) -> None:
    registry = h.provider.registry
    owned = registry.ensure_group("owned-group", None, "team-a/churn")
    assert registry.ensure_group("owned-group", None, "team-b/churn") == owned  # not retagged
    assert registry.group_owner(owned) == "team-a/churn"
    registry.claim_group(owned, "team-a/churn")  # the owner adopting its own group: no change
    with pytest.raises(TerminalError, match="team-a/churn"):
        registry.claim_group(owned, "team-b/churn")
    assert h.make().registry.group_owner(owned) == "team-a/churn"  # kept across a restart
    registry.release_group(owned, "team-b/churn")  # only the owner lets a group go
    assert registry.group_owner(owned) == "team-a/churn"
    registry.release_group(owned, "team-a/churn")
    assert registry.group_owner(owned) == ""
    free = registry.ensure_group("free-group", None)  # as `modeldeploy register` creates it
    assert registry.group_owner(free) == ""
    registry.claim_group(free, "team-b/churn")
    assert registry.group_owner(free) == "team-b/churn"


def test_registration_is_idempotent_across_restarts(h: Harness, model_tar_bytes: bytes) -> None:
    artifact = h.upload("churn/1/model.tar.gz", model_tar_bytes)
    spec = h.spec(artifact, frameworkVersion="3.2-0", metrics={"auc": 0.97})
    h.provider.registry.ensure_group(GROUP, None)
    first = h.provider.registry.register_version(spec)
    again = h.provider.registry.register_version(spec)
    after_restart = h.make().registry.register_version(spec)
    assert (first.version, first.approval_status) == (1, PENDING)
    assert again.arn == first.arn == after_restart.arn
    assert len(first.artifact_digest) == 64
    assert after_restart.artifact_digest == first.artifact_digest
    observed = h.observe()
    assert [v.version for v in observed.versions] == [1]
    assert observed.latest.metrics == {"auc": 0.97}


BAD_ARTIFACTS = {
    "not a tarball": (b"not a tarball", "gzip"),
    "two members": (tar_of("xgboost-model", b"{}", "extra-model"), "more than one file"),
    "a pickle": (tar_of("xgboost-model", pickle.dumps({"not": "a booster"})), "pickle"),
}


@pytest.mark.parametrize("kind", BAD_ARTIFACTS)
def test_unsafe_or_malformed_artifacts_are_refused(h: Harness, kind: str) -> None:
    body, complaint = BAD_ARTIFACTS[kind]
    with pytest.raises(TerminalError, match=complaint):
        register(h, body, "bad")
    assert h.observe().versions == ()


def test_an_artifact_the_serving_image_misreads_is_refused(
    h: Harness, model_tar_bytes: bytes
) -> None:
    # The fixture's model is written by this venv's xgboost (3.2): its base_score is a vector,
    # which the xgboost 1.7.4 inside the 1.7-1 image would read as 0.5.
    spec = h.spec(h.upload("churn/1/model.tar.gz", model_tar_bytes), frameworkVersion="1.7-1")
    h.provider.registry.ensure_group(GROUP, None)
    with pytest.raises(TerminalError) as refused:
        h.provider.registry.register_version(spec)
    message = str(refused.value)
    assert xgb.__version__ in message and "1.7.4" in message and "1.7-1" in message
    assert "3.2-0" in message  # the image to use instead
    assert h.observe().versions == ()


def test_a_missing_artifact_is_terminal(h: Harness) -> None:
    h.provider.registry.ensure_group(GROUP, None)
    with pytest.raises(TerminalError, match="nowhere"):
        h.provider.registry.register_version(h.spec(h.missing))


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [("SlowDown", 503, TransientError), ("AccessDenied", 403, TerminalError)],
)
def test_s3_errors_follow_the_one_policy(
    h: Harness,
    request: pytest.FixtureRequest,
    model_tar_bytes: bytes,
    code: str,
    status: int,
    kind: type,
) -> None:
    """Both providers read s3:// artifacts (the local one copies them into its store), and
    agree on what a retry can fix: S3 answering an error here is S3's, not the test's."""
    artifact = request.getfixturevalue("upload")("churn/1/model.tar.gz", model_tar_bytes)
    h.provider.registry.ensure_group(GROUP, None)

    def answer(**_: object) -> tuple[AWSResponse, dict]:
        error = {"Error": {"Code": code, "Message": "from the test"}}
        return AWSResponse(None, status, {}, None), {**error, "ResponseMetadata": {}}

    events = h.s3_events(h.provider)
    events.register("before-call.s3", answer)
    try:
        with pytest.raises(kind, match=code):
            h.provider.registry.register_version(h.spec(artifact))
    finally:
        events.unregister("before-call.s3", answer)


@pytest.mark.parametrize("decision", [APPROVED, REJECTED])
def test_approval_is_recorded_and_keeps_the_metrics(
    h: Harness, model_tar_bytes: bytes, decision: str
) -> None:
    version = register(h, model_tar_bytes, metrics={"auc": 0.97})
    text = f"{decision} by rule auc 0.97 >= 0.9"
    h.provider.registry.set_approval(version.arn, decision, text)
    # SageMaker keeps a package's metadata (where the metrics are) when an update omits it; the
    # emulator wipes it: the metrics survive only if the provider passes it back.
    latest = h.observe(provider=h.make()).latest
    assert (latest.version, latest.approval_status) == (1, decision)
    assert latest.approval_description == text
    assert latest.metrics == {"auc": 0.97}


def test_approving_a_version_that_does_not_exist_is_terminal(
    h: Harness, model_tar_bytes: bytes
) -> None:
    version = register(h, model_tar_bytes)
    absent = version.arn.rsplit("/", 1)[0] + "/9"
    with pytest.raises(TerminalError, match="does not exist"):
        h.provider.registry.set_approval(absent, APPROVED, "test")


# -- hosting ---------------------------------------------------------------------------------------


def test_deploy_is_idempotent_across_restarts(h: Harness, model_tar_bytes: bytes) -> None:
    request = request_for(approved(h, model_tar_bytes))
    endpoint = deployed(h, request)
    assert endpoint.url
    # The same request again, and again after a restart: only the absence of writes proves
    # idempotency (the emulator would silently overwrite a duplicate; SageMaker refuses it).
    restarted = h.make()
    with h.calls([h.provider, restarted]) as calls:
        h.provider.hosting.deploy(request)
        restarted.hosting.deploy(request)
    assert [c for c in calls if h.is_write(c)] == []
    assert restarted.hosting.describe(request.endpoint_name) == endpoint


def test_a_deploy_asked_again_before_it_settles_changes_nothing(
    h: Harness, model_tar_bytes: bytes
) -> None:
    # An operator that restarts between its deploy call and writing status asks again while
    # the endpoint is still being created: that is not an error, and creates nothing twice.
    request = request_for(approved(h, model_tar_bytes))
    h.provider.hosting.deploy(request)
    with h.calls([h.provider]) as calls:
        h.provider.hosting.deploy(request)
    assert [c for c in calls if h.is_write(c)] == []
    deployed(h, request)


def test_update_and_rollback_move_the_endpoint_between_configs(h: Harness) -> None:
    if h.name == "sagemaker":
        pytest.skip(
            "the emulator lacks UpdateEndpoint (it answers HTTP 500): test_sagemaker_provider "
            "checks the update call with botocore's Stubber instead"
        )
    first = request_for(approved(h, build_model_tar(rounds=3), "churn/1"))
    second = request_for(approved(h, build_model_tar(rounds=5), "churn/2"))
    assert first.config_name != second.config_name
    deployed(h, first)
    assert deployed(h, second).failure_reason == ""
    assert deployed(h, first).failure_reason == ""  # a rollback deploys what served before


def test_delete_is_idempotent_and_leaves_the_other_stage(
    h: Harness, model_tar_bytes: bytes
) -> None:
    staging, production = both_stages(h, model_tar_bytes)
    deadline = time.monotonic() + 60
    while not h.provider.hosting.delete(staging.endpoint_name):  # True once it is gone
        assert time.monotonic() < deadline, "the endpoint was never deleted"
        time.sleep(0.5)
    assert h.provider.hosting.describe(staging.endpoint_name) is None
    assert h.provider.hosting.delete(staging.endpoint_name) is True  # already gone
    assert h.provider.hosting.describe(production.endpoint_name).status == "InService"
    prefix = naming.endpoint_prefix(NS, NAME)
    assert h.make().hosting.names(prefix) == [production.endpoint_name]


def test_invoke_returns_the_models_answer_with_its_latency(
    h: Harness, model_tar_bytes: bytes
) -> None:
    request = request_for(approved(h, model_tar_bytes))
    deployed(h, request)
    row = [0.3, -1.2, 0.8, 0.1]
    with tarfile.open(fileobj=io.BytesIO(model_tar_bytes)) as tar:
        booster = xgb.Booster(model_file=bytearray(tar.extractfile("xgboost-model").read()))
    score = float(booster.predict(xgb.DMatrix(np.array([row])))[0])
    h.answer(f"{score}\n")
    result = h.provider.hosting.invoke(request.endpoint_name, ",".join(map(str, row)), "text/csv")
    assert float(result.body.decode()) == pytest.approx(score, abs=1e-6)
    assert result.content_type.startswith("text/csv")
    assert 0 < result.latency_ms < 10_000


# -- observe ---------------------------------------------------------------------------------------


def test_a_steady_observe_reads_within_its_budget_and_changes_nothing(
    h: Harness, model_tar_bytes: bytes
) -> None:
    staging, production = both_stages(h, model_tar_bytes)
    # A first look (empty status, e.g. after a restart) may read what it does not know.
    first = h.observe()
    assert first.staging.config_name == staging.config_name
    assert first.production.config_name == production.config_name

    steady = h.make()  # fresh clients: nothing cached from the deploys
    with h.calls([steady]) as calls:
        observed = h.observe(steady_hint(first), provider=steady)
    assert sorted(calls) == h.steady_reads
    assert observed.group_arn == first.group_arn
    assert (observed.staging, observed.production) == (first.staging, first.production)
    assert observed.latest.version == staging.version.version
    assert observed.latest.approval_status == APPROVED
    assert observed.latest.metrics == {"auc": 0.97}
    assert observed.staging.status == EndpointStatus.IN_SERVICE
