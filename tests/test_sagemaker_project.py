"""The sagemaker provider's deployment projects (project mode): SageMakerProjects.

What the emulator (moto server, 5.2.1 here) lacks, and so what botocore's Stubber answers:
- SageMaker CreateProject, DescribeProject, DeleteProject and
  GetSagemakerServicecatalogPortfolioStatus: "not been implemented".
- Service Catalog SearchProducts, SearchProductsAsAdmin, ListAcceptedPortfolioShares and
  ListLaunchPaths: not implemented (DescribeProduct is, but for products made through it only;
  one stubbed client cannot mix the two).
- CodePipeline GetPipelineState, ListPipelineExecutions and PutApprovalResult: not implemented.
- The template's stacks: its CloudFormation cannot make them (the template's Model has only
  `Containers`, on which it raises KeyError 'PrimaryContainer', and it ignores EndpointName).
Stubber checks each request against the service model (exact arguments where a test gives
them) and each canned answer against the response shape, so every answer here is a real shape.

What the emulator has is used over HTTP: IAM GetRole (NoSuchEntity for a missing role),
CloudFormation DescribeStacks/DeleteStack on stacks of the template's names (holding a queue,
not the template's resources), and SageMaker model packages, models, endpoint configs and
endpoints for the version an endpoint serves. Where one SageMaker client needs both (the
project canned, its endpoints from the emulator), `Canned` answers the named operations with
Stubber's validation and leaves the rest to the emulator.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from emulator import ACCOUNT, REGION, ROLE_ARN
from providers import recorded

from modeldeploy import naming
from modeldeploy.providers.errors import GateMoved, TerminalError, TransientError
from modeldeploy.providers.sagemaker import SageMakerProvider
from modeldeploy.providers.sagemaker.catalog import LAUNCH_ROLE, USE_ROLE
from modeldeploy.providers.sagemaker.project import SageMakerProjects, version_of
from modeldeploy.providers.sagemaker.registry import OWNER_TAG
from modeldeploy.remote import (
    GATE_ACTION,
    PROJECT_TEMPLATE,
    STAGING_STAGE,
    GateDecision,
    ObserveHint,
    Project,
    ProjectRequest,
)
from modeldeploy.spec import parse_spec

ONE_ATTEMPT = Config(retries={"mode": "standard", "max_attempts": 1})
NAME, PID, GROUP, OWNER = "demo", "p-abc123def456", "churn-xgboost", "ml/churn"
ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:project/{NAME}"
PIPELINE = f"sagemaker-{NAME}-{PID}-modeldeploy"
STAGING_STACK = f"sagemaker-{NAME}-{PID}-deploy-staging"
PROD_STACK = f"sagemaker-{NAME}-{PID}-deploy-prod"
RUN, OLD_RUN = "0b5e6f1a-1111-4a2b-8c3d-0123456789ab", "0b5e6f1a-2222-4a2b-8c3d-0123456789ab"
TOKEN = "7d3c2b1a-3333-4e5f-9a8b-0123456789ab"
PRODUCT, ARTIFACT_OLD, ARTIFACT_NEW, PATH = (
    "prod-ab12cd34ef56g",
    "pa-old111",
    "pa-new222",
    "lpv2-x1",
)
WHEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MISSING = ("ValidationException", f"Project {NAME} does not exist.")  # what ACK maps to 404
URL = "https://runtime.example/endpoints/{}/invocations"
TEMPLATE = "https://templates.s3.amazonaws.com/deploy-codepipeline.yaml"
SERVICES = ("sagemaker", "servicecatalog", "codepipeline", "cloudformation", "iam")
QUEUE_STACK = json.dumps({"Resources": {"Q": {"Type": "AWS::SQS::Queue"}}})


def described(status: str, **extra: Any) -> dict:
    """DescribeProject's answer (its required members, and what the test adds)."""
    return {
        "ProjectArn": ARN,
        "ProjectName": NAME,
        "ProjectId": PID,
        "ProjectStatus": status,
        "CreationTime": WHEN,
        **extra,
    }


def owned_by(owner: str | None) -> dict:
    return {"Tags": [{"Key": OWNER_TAG, "Value": owner}] if owner else []}


class Canned:
    """Stubber's checks on some operations of a client the emulator serves otherwise: queued
    answers (validated against the output shape, as Stubber does) for the named operations;
    every other call goes to the emulator."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.queue: dict[str, deque[dict]] = {}
        service = client.meta.service_model.service_id.hyphenize()
        client.meta.events.register(f"before-call.{service}", self._answer)

    def add(self, operation: str, response: dict) -> None:
        shape = self.client.meta.service_model.operation_model(operation).output_shape
        validate_parameters(response, shape)
        self.queue.setdefault(operation, deque()).append(response)

    def _answer(self, model: Any, **_: Any) -> tuple[AWSResponse, dict] | None:
        queued = self.queue.get(model.name)
        if not queued:
            return None
        return AWSResponse(None, 200, {}, None), queued.popleft()

    def assert_used(self) -> None:
        assert not any(self.queue.values()), self.queue


@dataclass
class Rig:
    """SageMakerProjects on clients that are stubbed or the emulator's, per service."""

    projects: SageMakerProjects
    clients: dict[str, Any]
    stubs: dict[str, Stubber] = field(default_factory=dict)

    def stub(self, service: str) -> Stubber:
        return self.stubs[service]


def make_rig(session: boto3.session.Session, emulated: tuple[str, ...] = ()) -> Iterator[Rig]:
    clients = {s: session.client(s, region_name=REGION, config=ONE_ATTEMPT) for s in SERVICES}
    stubs = {s: Stubber(c) for s, c in clients.items() if s not in emulated}
    for stub in stubs.values():
        stub.activate()
    projects = SageMakerProjects(clients["sagemaker"], clients.__getitem__, URL.format)
    yield Rig(projects, clients, stubs)
    for stub in stubs.values():
        stub.assert_no_pending_responses()  # every queued answer was asked for
        stub.deactivate()


@pytest.fixture(scope="module")
def stub_session() -> boto3.session.Session:
    # One session: it caches service models, which makes each client much cheaper.
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


@pytest.fixture
def stubbed(stub_session: boto3.session.Session) -> Iterator[Rig]:
    """Every client stubbed: no emulator, fake credentials (nothing is sent)."""
    yield from make_rig(stub_session)


@pytest.fixture
def with_iam(aws_env, boto_session) -> Iterator[Rig]:
    """IAM from the emulator; the rest stubbed."""
    yield from make_rig(boto_session, emulated=("iam",))


def create_template_roles(iam: Any) -> None:
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    for role in (LAUNCH_ROLE, USE_ROLE):
        iam.create_role(RoleName=role, Path="/service-role/", AssumeRolePolicyDocument=trust)


def request(**changes: Any) -> ProjectRequest:
    base: dict[str, Any] = {
        "name": NAME,
        "group": GROUP,
        "owner": OWNER,
        "parameters": (("EndpointInstanceType", "ml.m5.large"),),
    }
    return ProjectRequest(**{**base, **changes})


def expect_absent_then_enabled(sm: Stubber) -> None:
    sm.add_client_error("describe_project", *MISSING, expected_params={"ProjectName": NAME})
    sm.add_response("get_sagemaker_servicecatalog_portfolio_status", {"Status": "Enabled"})


def expect_create(sm: Stubber, artifact: str, path: str | None = None) -> None:
    """CreateProject from the product's `artifact` (and launch `path`) with the group's
    parameters and the owner tag."""
    details = {"ProductId": PRODUCT, "ProvisioningArtifactId": artifact}
    details |= {"PathId": path} if path else {}
    details["ProvisioningParameters"] = PARAMETERS
    expected = {**CREATE_COMMON, "ServiceCatalogProvisioningDetails": details}
    sm.add_response("create_project", CREATED, expected_params=expected)


PARAMETERS = [
    {"Key": "SourceModelPackageGroupName", "Value": GROUP},
    {"Key": "EndpointInstanceType", "Value": "ml.m5.large"},
]
CREATE_COMMON = {
    "ProjectName": NAME,
    "ProjectDescription": f"Deploys model package group {GROUP} for ModelDeployment {OWNER}",
    "Tags": [{"Key": OWNER_TAG, "Value": OWNER}],
}
CREATED = {"ProjectArn": ARN, "ProjectId": PID}


# -- create ---------------------------------------------------------------------------------------


def test_create_finds_the_template_by_exact_name_and_its_newest_version(with_iam: Rig) -> None:
    """Stubber: the emulator has no projects and no Service Catalog search; GetRole is its."""
    create_template_roles(with_iam.clients["iam"])
    sm, sc = with_iam.stub("sagemaker"), with_iam.stub("servicecatalog")
    expect_absent_then_enabled(sm)
    similar = "MLOps template for model building, training, and deployment"
    sc.add_response(
        "search_products",
        {
            "ProductViewSummaries": [
                {"Id": "prodview-1", "ProductId": "prod-other0000001", "Name": similar},
                {"Id": "prodview-2", "ProductId": PRODUCT, "Name": PROJECT_TEMPLATE},
            ]
        },
        expected_params={"Filters": {"FullTextSearch": [PROJECT_TEMPLATE]}},
    )
    newer, older = datetime(2025, 6, 1, tzinfo=UTC), datetime(2023, 1, 1, tzinfo=UTC)
    sc.add_response(
        "describe_product",
        {
            "ProvisioningArtifacts": [
                {"Id": ARTIFACT_OLD, "CreatedTime": older},
                {"Id": ARTIFACT_NEW, "CreatedTime": newer},
                {"Id": "pa-deprecated9", "CreatedTime": WHEN, "Guidance": "DEPRECATED"},
            ]
        },
        expected_params={"Id": PRODUCT},
    )
    sc.add_response(
        "list_launch_paths",
        {"LaunchPathSummaries": [{"Id": PATH, "Name": "Amazon SageMaker Solutions"}]},
        expected_params={"ProductId": PRODUCT},
    )
    expect_create(sm, ARTIFACT_NEW, path=PATH)
    sm.add_response("describe_project", described("CreateInProgress"))  # owner known: no tags

    project = with_iam.projects.create(request())

    assert (project.name, project.project_id, project.status) == (NAME, PID, "CreateInProgress")
    assert (project.owner, project.pipeline) == (OWNER, PIPELINE)


@pytest.mark.parametrize("status", ["CreateInProgress", "CreateFailed"])
def test_create_returns_our_project_when_it_exists(stubbed: Rig, status: str) -> None:
    """Stubber: no DescribeProject/ListTags of projects in the emulator. A second create (an
    answer lost, a restart) finds its own project: no CreateProject, no precondition read."""
    sm = stubbed.stub("sagemaker")
    sm.add_response("describe_project", described(status), expected_params={"ProjectName": NAME})
    sm.add_response("list_tags", owned_by(OWNER), expected_params={"ResourceArn": ARN})

    project = stubbed.projects.create(request())

    assert (project.status, project.owner) == (status, OWNER)


@pytest.mark.parametrize(
    ("owner", "named"), [("ml/other", "ml/other"), (None, "no ModelDeployment")]
)
def test_create_refuses_a_project_of_that_name_owned_by_another(
    stubbed: Rig, owner: str | None, named: str
) -> None:
    """Stubber: as above. Nothing is created (Stubber fails any unqueued call)."""
    sm = stubbed.stub("sagemaker")
    sm.add_response("describe_project", described("CreateCompleted"))
    sm.add_response("list_tags", owned_by(owner))

    with pytest.raises(TerminalError) as caught:
        stubbed.projects.create(request())

    text = str(caught.value)
    assert f"project {NAME} exists and belongs to {named}" in text
    assert "choose another spec.deployment.project.name" in text


def test_create_stops_while_the_portfolio_is_disabled(stubbed: Rig) -> None:
    """Stubber: GetSagemakerServicecatalogPortfolioStatus is not in the emulator."""
    sm = stubbed.stub("sagemaker")
    sm.add_client_error("describe_project", *MISSING)
    sm.add_response("get_sagemaker_servicecatalog_portfolio_status", {"Status": "Disabled"})

    with pytest.raises(
        TerminalError, match="aws sagemaker enable-sagemaker-servicecatalog-portfolio"
    ):
        stubbed.projects.create(request())


def test_create_names_a_missing_launch_role(with_iam: Rig) -> None:
    """GetRole against the emulator (no such role: NoSuchEntity); the project calls stubbed."""
    expect_absent_then_enabled(with_iam.stub("sagemaker"))

    with pytest.raises(TerminalError) as caught:
        with_iam.projects.create(request())

    assert f"service-role/{LAUNCH_ROLE} does not exist" in str(caught.value)
    assert "Enable Projects, and JumpStart templates" in str(caught.value)


def test_create_by_product_id_skips_the_search_and_a_refused_get_role(stubbed: Rig) -> None:
    """Stubber: AccessDenied on GetRole (the emulator allows every call) is no refusal."""
    sm, iam = stubbed.stub("sagemaker"), stubbed.stub("iam")
    expect_absent_then_enabled(sm)
    for role in (LAUNCH_ROLE, USE_ROLE):
        iam.add_client_error(
            "get_role",
            "AccessDenied",
            "not authorized to perform: iam:GetRole",
            403,
            expected_params={"RoleName": role},
        )
    expect_create(sm, ARTIFACT_OLD)
    sm.add_response("describe_project", described("Pending"))

    project = stubbed.projects.create(
        request(
            template_product_name=None, product_id=PRODUCT, provisioning_artifact_id=ARTIFACT_OLD
        )
    )

    assert project.status == "Pending"


def test_create_falls_back_to_the_admin_search(with_iam: Rig) -> None:
    """Stubber: the emulator has none of the admin calls. No launch path: an admin that is not
    an end user cannot list them, and SageMaker takes the only one."""
    create_template_roles(with_iam.clients["iam"])
    sm, sc = with_iam.stub("sagemaker"), with_iam.stub("servicecatalog")
    expect_absent_then_enabled(sm)
    sc.add_response("search_products", {"ProductViewSummaries": []})
    sc.add_response(
        "list_accepted_portfolio_shares",
        {
            "PortfolioDetails": [
                {"Id": "port-abc", "DisplayName": "Amazon SageMaker Solutions and ML Ops products"}
            ]
        },
        expected_params={"PortfolioShareType": "IMPORTED"},
    )
    sc.add_response(
        "search_products_as_admin",
        {
            "ProductViewDetails": [
                {"ProductViewSummary": {"ProductId": PRODUCT, "Name": PROJECT_TEMPLATE}}
            ]
        },
        expected_params={
            "PortfolioId": "port-abc",
            "Filters": {"FullTextSearch": [PROJECT_TEMPLATE]},
        },
    )
    sc.add_response(
        "describe_product_as_admin",
        {"ProvisioningArtifactSummaries": [{"Id": ARTIFACT_NEW, "CreatedTime": WHEN}]},
        expected_params={"Id": PRODUCT},
    )
    expect_create(sm, ARTIFACT_NEW)
    sm.add_response("describe_project", described("CreateInProgress"))

    assert with_iam.projects.create(request()).project_id == PID


def test_create_says_no_product_of_that_name_is_visible(with_iam: Rig) -> None:
    """Stubber: both searches (end user and admin) find only a similar name."""
    create_template_roles(with_iam.clients["iam"])
    sm, sc = with_iam.stub("sagemaker"), with_iam.stub("servicecatalog")
    expect_absent_then_enabled(sm)
    similar = {"ProductId": "prod-other0000001", "Name": f"{PROJECT_TEMPLATE} with third-party Git"}
    sc.add_response("search_products", {"ProductViewSummaries": [similar]})
    sc.add_response("list_accepted_portfolio_shares", {"PortfolioDetails": [{"Id": "port-abc"}]})
    sc.add_response(
        "search_products_as_admin", {"ProductViewDetails": [{"ProductViewSummary": similar}]}
    )

    with pytest.raises(TerminalError) as caught:
        with_iam.projects.create(request())

    text = str(caught.value)
    assert f"no Service Catalog product named {PROJECT_TEMPLATE!r} is visible" in text
    assert "spec.deployment.project.productId" in text


def test_create_from_a_template_url(stubbed: Rig) -> None:
    """Stubber: CreateProject with TemplateProviders; no Service Catalog, portfolio or roles."""
    sm = stubbed.stub("sagemaker")
    sm.add_client_error("describe_project", *MISSING)
    url = "https://templates.s3.amazonaws.com/deploy-codepipeline.yaml"
    role = f"arn:aws:iam::{ACCOUNT}:role/service-role/AmazonSageMakerProjectsLaunchRole"
    provider = {"TemplateName": NAME, "TemplateURL": url, "RoleARN": role, "Parameters": PARAMETERS}
    sm.add_response(
        "create_project",
        CREATED,
        expected_params={**CREATE_COMMON, "TemplateProviders": [{"CfnTemplateProvider": provider}]},
    )
    sm.add_client_error("describe_project", *MISSING)  # not yet visible: CreateProject's answer

    project = stubbed.projects.create(
        request(template_product_name=None, template_url=url, role_arn=role)
    )

    assert (project.project_id, project.arn, project.status, project.owner) == (
        PID,
        ARN,
        "Pending",
        OWNER,
    )


def test_create_names_the_launch_role_service_catalog_could_not_assume(stubbed: Rig) -> None:
    """Stubber: the error of issue aws-samples/sagemaker-custom-project-templates#40."""
    sm = stubbed.stub("sagemaker")
    sm.add_client_error("describe_project", *MISSING)
    role = f"arn:aws:iam::{ACCOUNT}:role/service-role/{LAUNCH_ROLE}"
    sm.add_client_error(
        "create_project", "ValidationException", f"Access denied while assuming the role {role}."
    )

    with pytest.raises(
        TerminalError, match=f"could not assume the launch role service-role/{LAUNCH_ROLE}"
    ):
        stubbed.projects.create(
            request(template_product_name=None, template_url="https://x.example/t.yaml")
        )


# -- describe -------------------------------------------------------------------------------------


def pipeline_waiting_at_the_gate() -> dict:
    done = {"pipelineExecutionId": RUN, "status": "Succeeded"}
    return {
        "pipelineName": PIPELINE,
        "pipelineVersion": 1,
        "stageStates": [
            {
                "stageName": "Source",
                "latestExecution": done,
                "actionStates": [
                    {
                        "actionName": "ModelDeployInfraCode",
                        "latestExecution": {"status": "Succeeded"},
                    }
                ],
            },
            {
                "stageName": "Build",
                "latestExecution": done,
                "actionStates": [
                    {
                        "actionName": "BuildDeploymentTemplates",
                        "latestExecution": {"status": "Succeeded"},
                    }
                ],
            },
            {
                "stageName": STAGING_STAGE,
                "latestExecution": {"pipelineExecutionId": RUN, "status": "InProgress"},
                "actionStates": [
                    {
                        "actionName": "DeployResourcesStaging",
                        "latestExecution": {"status": "Succeeded"},
                    },
                    {"actionName": "TestStaging", "latestExecution": {"status": "Succeeded"}},
                    {
                        "actionName": GATE_ACTION,
                        "latestExecution": {
                            "status": "InProgress",
                            "token": TOKEN,
                            "lastStatusChange": WHEN,
                        },
                    },
                ],
            },
            {"stageName": "DeployProd", "actionStates": [{"actionName": "DeployResourcesProd"}]},
        ],
    }


def serve_version_one(sm: Any, endpoint: str) -> None:
    """On the emulator: group, version 1, a model made as the template makes it (Containers
    with the ModelPackageName only), its config, and the endpoint."""
    sm.create_model_package_group(ModelPackageGroupName=GROUP)
    image = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/xgboost:1"
    package = sm.create_model_package(
        ModelPackageGroupName=GROUP,
        ModelApprovalStatus="Approved",
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": "s3://bucket/model.tar.gz"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
    )["ModelPackageArn"]
    sm.create_model(
        ModelName=f"{endpoint}-model",
        ExecutionRoleArn=ROLE_ARN,
        Containers=[{"ModelPackageName": package}],
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{endpoint}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{endpoint}-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=f"{endpoint}-config")


@pytest.fixture
def emulated(aws_env, boto_session) -> Iterator[tuple[Rig, Canned]]:
    """SageMaker and CloudFormation from the emulator (the project's calls canned on the
    SageMaker client), CodePipeline stubbed."""
    for rig in make_rig(boto_session, emulated=("sagemaker", "cloudformation", "iam")):
        canned = Canned(rig.clients["sagemaker"])
        yield rig, canned
        canned.assert_used()


def test_describe_reads_the_gate_the_stacks_and_what_each_endpoint_serves(emulated) -> None:
    """Canned DescribeProject/ListTags and stubbed CodePipeline (not in the emulator); the
    stack, endpoint, config, model and package are the emulator's."""
    rig, canned = emulated
    sm, cf, cp = rig.clients["sagemaker"], rig.clients["cloudformation"], rig.stub("codepipeline")
    serve_version_one(sm, f"{NAME}-staging")
    cf.create_stack(StackName=STAGING_STACK, TemplateBody=QUEUE_STACK)
    for _ in range(2):
        canned.add("DescribeProject", described("CreateCompleted"))
        cp.add_response(
            "get_pipeline_state", pipeline_waiting_at_the_gate(), expected_params={"name": PIPELINE}
        )
        cp.add_response(
            "list_pipeline_executions",
            {
                "pipelineExecutionSummaries": [
                    {
                        "pipelineExecutionId": RUN,
                        "status": "InProgress",
                        "trigger": {"triggerType": "CloudWatchEvent"},
                    },
                    {"pipelineExecutionId": OLD_RUN, "status": "Superseded"},
                ]
            },
            expected_params={"pipelineName": PIPELINE, "maxResults": 5},
        )
    canned.add("ListTags", owned_by(OWNER))  # once: tags are kept per project

    project = rig.projects.describe(NAME)

    assert project is not None and (project.status, project.owner) == ("CreateCompleted", OWNER)
    assert project.pipeline == PIPELINE
    gate = project.gate
    assert gate is not None and (gate.status, gate.token) == ("InProgress", TOKEN)
    assert gate.last_change == WHEN.isoformat()
    assert project.stage(STAGING_STAGE).execution_id == RUN
    assert [e.execution_id for e in project.executions] == [RUN, OLD_RUN]
    assert project.execution(OLD_RUN).status == "Superseded"
    assert project.staging_stack.name == STAGING_STACK
    assert project.staging_stack.status == "CREATE_COMPLETE"
    assert project.production_stack is None
    staging = project.staging
    assert (staging.name, staging.status, staging.served_version) == (
        f"{NAME}-staging",
        "InService",
        1,
    )
    assert (staging.config_name, staging.url) == (
        f"{NAME}-staging-config",
        URL.format(f"{NAME}-staging"),
    )
    assert project.production is None

    with recorded(sm) as calls:  # a config never changes: what it serves is not read again
        again = rig.projects.describe(NAME)
    assert again.staging.served_version == 1
    assert "DescribeEndpointConfig" not in calls and "DescribeModel" not in calls


def test_a_decided_gate_offers_no_token(stubbed: Rig) -> None:
    """Stubber: GetPipelineState keeps the token of an approval already decided."""
    sm, cp, cf = (
        stubbed.stub("sagemaker"),
        stubbed.stub("codepipeline"),
        stubbed.stub("cloudformation"),
    )
    sm.add_response("describe_project", described("CreateCompleted"))
    sm.add_response("list_tags", owned_by(OWNER))
    state = pipeline_waiting_at_the_gate()
    gate = state["stageStates"][2]["actionStates"][2]["latestExecution"]
    gate.update(
        status="Succeeded", summary="looks good", lastUpdatedBy="arn:aws:iam::123456789012:user/ana"
    )
    cp.add_response("get_pipeline_state", state)
    cp.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": []})
    for stack in (STAGING_STACK, PROD_STACK):
        cf.add_client_error(
            "describe_stacks", "ValidationError", f"Stack with id {stack} does not exist"
        )
    for endpoint in (f"{NAME}-staging", f"{NAME}-prod"):
        sm.add_client_error(
            "describe_endpoint", "ValidationException", f'Could not find endpoint "{endpoint}".'
        )

    project = stubbed.projects.describe(NAME)

    assert project.gate.status == "Succeeded" and project.gate.token == ""
    assert project.gate.updated_by.endswith("user/ana") and project.gate.summary == "looks good"


def test_describe_a_failed_project_says_why(stubbed: Rig) -> None:
    """Stubber: the project's own status; nothing of a pipeline is read for a failed one."""
    sm = stubbed.stub("sagemaker")
    why = "Codebuild to checkin seedcode has status FAILED"
    provisioning = {
        "ProductId": PRODUCT,
        "ProvisioningParameters": [{"Key": "SourceModelPackageGroupName", "Value": GROUP}],
    }
    sm.add_response(
        "describe_project",
        described(
            "CreateFailed",
            ServiceCatalogProvisioningDetails=provisioning,
            ServiceCatalogProvisionedProductDetails={
                "ProvisionedProductId": "pp-x1",
                "ProvisionedProductStatusMessage": why,
            },
        ),
    )
    sm.add_response("list_tags", owned_by(OWNER))

    project = stubbed.projects.describe(NAME)

    assert (project.status, project.message, project.group) == ("CreateFailed", why, GROUP)
    assert project.stages == () and project.staging is None


@pytest.mark.parametrize("answer", ["missing", "DeleteCompleted"])
def test_describe_is_none_for_no_project(stubbed: Rig, answer: str) -> None:
    sm = stubbed.stub("sagemaker")
    if answer == "missing":
        sm.add_client_error("describe_project", *MISSING)
    else:
        sm.add_response("describe_project", described(answer))

    assert stubbed.projects.describe(NAME) is None


def test_a_pipeline_not_made_yet_has_no_stages(stubbed: Rig) -> None:
    """Stubber: PipelineNotFoundException right after the project completes."""
    sm, cp, cf = (
        stubbed.stub("sagemaker"),
        stubbed.stub("codepipeline"),
        stubbed.stub("cloudformation"),
    )
    sm.add_response("describe_project", described("CreateCompleted"))
    sm.add_response("list_tags", owned_by(OWNER))
    cp.add_client_error(
        "get_pipeline_state", "PipelineNotFoundException", f"Pipeline {PIPELINE} not found"
    )
    for stack in (STAGING_STACK, PROD_STACK):
        cf.add_client_error(
            "describe_stacks", "ValidationError", f"Stack with id {stack} does not exist"
        )
    for _ in range(2):
        sm.add_client_error("describe_endpoint", "ValidationException", "Could not find endpoint.")

    project = stubbed.projects.describe(NAME)

    assert project.stages == () and project.executions == () and project.gate is None


def test_version_of_a_package_arn() -> None:
    assert version_of(f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{GROUP}/12") == 12
    assert version_of(f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/unversioned") is None
    assert version_of("") is None


# -- decide ---------------------------------------------------------------------------------------


def decision(approve: bool, summary: str = "auc 0.97 >= 0.9") -> GateDecision:
    return GateDecision(NAME, PIPELINE, RUN, TOKEN, approve, summary)


@pytest.mark.parametrize(("approve", "status"), [(True, "Approved"), (False, "Rejected")])
def test_decide_puts_the_approval_result(stubbed: Rig, approve: bool, status: str) -> None:
    """Stubber: PutApprovalResult is not in the emulator. The summary is cut to 512."""
    summary = "x" * 600
    stubbed.stub("codepipeline").add_response(
        "put_approval_result",
        {"approvedAt": WHEN},
        expected_params={
            "pipelineName": PIPELINE,
            "stageName": STAGING_STAGE,
            "actionName": GATE_ACTION,
            "result": {"summary": "x" * 512, "status": status},
            "token": TOKEN,
        },
    )

    stubbed.projects.decide(decision(approve, summary))


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        ("InvalidApprovalTokenException", "a newer run replaced the token"),
        ("ApprovalAlreadyCompletedException", "a person decided it in the console first"),
    ],
)
def test_a_moved_gate_is_reported_not_retried(stubbed: Rig, code: str, meaning: str) -> None:
    """Stubber: CodePipeline's two refusals of a decision that came too late."""
    aws_words = "The approval action has already been completed."
    stubbed.stub("codepipeline").add_client_error("put_approval_result", code, aws_words)

    with pytest.raises(GateMoved) as caught:
        stubbed.projects.decide(decision(True))

    assert code in str(caught.value) and aws_words in str(caught.value)
    assert meaning in str(caught.value) and RUN in str(caught.value)


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("ThrottlingException", 400, TransientError),
        ("PipelineNotFoundException", 400, TerminalError),
    ],
)
def test_other_decision_errors_follow_the_policy(
    stubbed: Rig, code: str, status: int, kind: type
) -> None:
    stubbed.stub("codepipeline").add_client_error("put_approval_result", code, "no", status)

    with pytest.raises(kind, match=f"PutApprovalResult {PIPELINE}"):
        stubbed.projects.decide(decision(False))


# -- delete ---------------------------------------------------------------------------------------


@pytest.fixture
def project_stacks(aws_env, boto_session) -> Iterator[tuple[Rig, Any]]:
    """CloudFormation from the emulator, holding both stacks; SageMaker stubbed."""
    for rig in make_rig(boto_session, emulated=("cloudformation",)):
        cf = rig.clients["cloudformation"]
        for stack in (STAGING_STACK, PROD_STACK):
            cf.create_stack(StackName=stack, TemplateBody=QUEUE_STACK)
        yield rig, cf


def stack_names(cf: Any) -> set[str]:
    names = set()
    for stack in (STAGING_STACK, PROD_STACK):
        try:
            names.add(cf.describe_stacks(StackName=stack)["Stacks"][0]["StackName"])
        except ClientError:
            continue
    return names


def test_delete_removes_the_project_then_its_stacks_across_calls(project_stacks) -> None:
    """Stubber for DescribeProject/DeleteProject; the stacks are the emulator's (deleted at
    once there; by name, a deleted stack "does not exist", as in CloudFormation)."""
    rig, cf = project_stacks
    sm = rig.stub("sagemaker")
    project = Project(NAME, PID, ARN, "CreateCompleted", owner=OWNER)  # as the caller holds it
    sm.add_response("describe_project", described("CreateCompleted"))
    sm.add_response("delete_project", {}, expected_params={"ProjectName": NAME})
    sm.add_response("describe_project", described("DeleteInProgress"))  # no second DeleteProject
    sm.add_client_error("describe_project", *MISSING)
    sm.add_client_error("describe_project", *MISSING)

    with recorded(cf) as calls:
        done, left = rig.projects.delete(project)
    assert not done and calls.count("DeleteStack") == 2
    assert stack_names(cf) == set()
    assert left == f"bucket sagemaker-project-{PID} (the template retains it)"

    done, _ = rig.projects.delete(project)
    assert not done  # the stacks are gone, the project is still being deleted

    done, left = rig.projects.delete(project)
    assert done and "sagemaker-project-" in left
    with recorded(cf) as calls:
        assert rig.projects.delete(project)[0]  # and stays done
    assert "DeleteStack" not in calls


def test_delete_asks_again_after_a_failed_delete(stubbed: Rig) -> None:
    """Stubber: DeleteFailed is retried, and its reason shown."""
    sm, cf = stubbed.stub("sagemaker"), stubbed.stub("cloudformation")
    why = "TerminateProvisionedProduct failed: role not authorized"
    details = {"ProvisionedProductId": "pp-x1", "ProvisionedProductStatusMessage": why}
    sm.add_response(
        "describe_project",
        described("DeleteFailed", ServiceCatalogProvisionedProductDetails=details),
    )
    sm.add_response("delete_project", {}, expected_params={"ProjectName": NAME})
    for stack in (STAGING_STACK, PROD_STACK):
        cf.add_client_error(
            "describe_stacks", "ValidationError", f"Stack with id {stack} does not exist"
        )

    with pytest.raises(TransientError, match=why):
        stubbed.projects.delete(Project(NAME, PID, ARN, "DeleteFailed"))


# -- the provider in project mode -----------------------------------------------------------------


def test_observe_in_project_mode_reads_the_project_endpoints_not_its_own(
    aws_env, boto_session
) -> None:
    """The provider over the emulator, DescribeProject/ListTags canned on its SageMaker client
    (the emulator has no projects), CodePipeline stubbed (it has no GetPipelineState). An
    endpoint of the operator's own naming exists and is not read."""
    sm = boto_session.client("sagemaker", config=ONE_ATTEMPT)
    cp = boto_session.client("codepipeline", region_name=REGION, config=ONE_ATTEMPT)
    provider = SageMakerProvider(
        REGION,
        ROLE_ARN,
        sagemaker_client=sm,
        runtime_client=boto_session.client("sagemaker-runtime", config=ONE_ATTEMPT),
        s3_client=boto_session.client("s3", config=ONE_ATTEMPT),
        codepipeline_client=cp,
        view_max_age=0,
    )
    serve_version_one(sm, f"{NAME}-staging")
    own = naming.endpoint_name("ml", "churn", "staging")
    sm.create_endpoint(EndpointName=own, EndpointConfigName=f"{NAME}-staging-config")
    canned = Canned(sm)
    canned.add("DescribeProject", described("CreateCompleted"))
    canned.add("ListTags", owned_by(OWNER))
    with Stubber(cp) as stub:
        stub.add_response("get_pipeline_state", pipeline_waiting_at_the_gate())
        stub.add_response("list_pipeline_executions", {"pipelineExecutionSummaries": []})
        spec = parse_spec(
            {
                "provider": "sagemaker",
                "region": REGION,
                "roleArn": ROLE_ARN,
                "modelPackageGroup": {"name": GROUP},
                "deployment": {"via": "Project", "project": {"name": NAME}},
            }
        )
        with recorded(sm) as calls:
            observed = provider.observe(spec, ObserveHint(), namespace="ml", name="churn")
        stub.assert_no_pending_responses()
    canned.assert_used()

    assert observed.project is not None and observed.project.gate.token == TOKEN
    assert observed.staging is not None and observed.staging.name == f"{NAME}-staging"
    assert observed.staging.served_version == 1 and observed.production is None
    assert [v.version for v in observed.versions] == [1]
    described_endpoints = [c for c in calls if c == "DescribeEndpoint"]
    assert len(described_endpoints) == 2  # <name>-staging and <name>-prod, never `own`
    assert provider.client("codepipeline") is cp


def test_create_whose_answer_was_lost_finds_its_own_project(stubbed: Rig) -> None:
    """Stubber: the SDK's retry of a CreateProject that succeeded meets "already exists"; the
    owner tag says it is ours, so it is the answer (the emulator has no projects)."""
    sm = stubbed.stub("sagemaker")
    sm.add_client_error("describe_project", *MISSING)
    sm.add_client_error("create_project", "ValidationException", f"Project {NAME} already exists.")
    sm.add_response("describe_project", described("CreateInProgress"))
    sm.add_response("list_tags", owned_by(OWNER))

    project = stubbed.projects.create(request(template_product_name=None, template_url=TEMPLATE))

    assert (project.project_id, project.status, project.owner) == (PID, "CreateInProgress", OWNER)
