"""The sagemaker provider's deployment projects (project mode).

A project made from the "MLOps template for model deployment" provisions a CodePipeline that
deploys the group's newest approved version as the CloudFormation stack `...-deploy-staging`
(endpoint `<name>-staging`), waits at DeployStaging/ApproveDeployment, then deploys
`...-deploy-prod` (endpoint `<name>-prod`). The operator creates the project, reads all of it
and decides the gate; the names below are the template's own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modeldeploy import remote
from modeldeploy.providers import errors
from modeldeploy.providers.sagemaker.catalog import LAUNCH_ROLE, TOGGLE, Catalog
from modeldeploy.providers.sagemaker.errors import already_exists, call_or_none
from modeldeploy.providers.sagemaker.registry import OWNER_TAG
from modeldeploy.remote import Endpoint, PipelineStage, Project, Stack, pipeline_name, stack_name

GROUP_PARAMETER = "SourceModelPackageGroupName"
DELETED, DELETING, DELETE_FAILED = "DeleteCompleted", "DeleteInProgress", "DeleteFailed"
# The template's resources (the pipeline above all) stand in these project states.
STANDING = frozenset({"CreateCompleted", "UpdateInProgress", "UpdateCompleted", "UpdateFailed"})
STACK_DELETED, STACK_DELETING = "DELETE_COMPLETE", "DELETE_IN_PROGRESS"
STAGES = ("staging", "prod")  # the template's StageName values
EXECUTIONS_READ = 5
KEPT = 1024  # owners and served versions remembered (both immutable per key)
# Why a gate decision was refused, in words for the person reading the status.
GATE_MOVED = {
    "InvalidApprovalTokenException": "a newer run replaced the token (or the run was stopped)",
    "ApprovalAlreadyCompletedException": "a person decided it in the console first",
}


def bucket_name(project_id: str) -> str:
    return f"sagemaker-project-{project_id}"


def version_of(package_arn: str) -> int | None:
    """arn:...:model-package/<group>/<n> -> n; None for an unversioned package."""
    tail = package_arn.rsplit("/", 1)[-1] if package_arn else ""
    return int(tail) if tail.isdigit() else None


def _message(desc: dict) -> str:
    product = desc.get("ServiceCatalogProvisionedProductDetails") or {}
    if product.get("ProvisionedProductStatusMessage"):
        return str(product["ProvisionedProductStatusMessage"])
    for provider in desc.get("TemplateProviderDetails") or []:
        stack = provider.get("CfnTemplateProviderDetail", {}).get("StackDetail") or {}
        if stack.get("StatusMessage"):
            return str(stack["StatusMessage"])
    return ""


def _group(desc: dict) -> str:
    details = desc.get("ServiceCatalogProvisioningDetails") or {}
    params = list(details.get("ProvisioningParameters") or [])
    for provider in desc.get("TemplateProviderDetails") or []:
        params += provider.get("CfnTemplateProviderDetail", {}).get("Parameters") or []
    return next((p.get("Value", "") for p in params if p.get("Key") == GROUP_PARAMETER), "")


def _action(raw: dict) -> remote.PipelineAction:
    latest = raw.get("latestExecution") or {}
    status = latest.get("status", "")
    changed = latest.get("lastStatusChange")
    return remote.PipelineAction(
        name=raw.get("actionName", ""),
        status=status,
        summary=latest.get("summary", ""),
        # A decided approval keeps its token in the answer; only a waiting one is usable.
        token=latest.get("token", "") if status == "InProgress" else "",
        last_change=changed.isoformat() if changed else "",
        updated_by=latest.get("lastUpdatedBy", ""),
    )


def _stage(raw: dict) -> PipelineStage:
    latest = raw.get("latestExecution") or {}
    return PipelineStage(
        name=raw.get("stageName", ""),
        status=latest.get("status", ""),
        execution_id=latest.get("pipelineExecutionId", ""),
        actions=tuple(_action(a) for a in raw.get("actionStates") or []),
    )


def _remember(cache: dict, key: Any, value: Any) -> Any:
    if len(cache) >= KEPT:
        cache.clear()
    cache[key] = value
    return value


class SageMakerProjects:
    """`Projects` on SageMaker, Service Catalog, CodePipeline, CloudFormation and IAM.

    `clients(service)` gives the other services' clients, made when first needed; `url(name)`
    is the invocation URL of an endpoint, as the hosting builds it."""

    def __init__(self, sm: Any, clients: Callable[[str], Any], url: Callable[[str], str]) -> None:
        self.sm = sm
        self.clients = clients
        self.url = url
        self._owners: dict[tuple[str, str], str] = {}  # (arn, id) -> owner: tags stay put
        self._served: dict[str, int | None] = {}  # endpoint config -> version: immutable

    # -- describe ---------------------------------------------------------------------------------

    def describe(self, name: str) -> Project | None:
        desc = self._describe_project(name)
        return self._full(desc) if desc is not None else None

    def _describe_project(self, name: str) -> dict | None:
        # A missing project is a ValidationException ("does not exist") or ResourceNotFound.
        desc = call_or_none(f"DescribeProject {name}", self.sm.describe_project, ProjectName=name)
        return None if desc is None or desc.get("ProjectStatus") == DELETED else desc

    def _project(self, desc: dict) -> Project:
        name, project_id, arn = desc["ProjectName"], desc["ProjectId"], desc["ProjectArn"]
        return Project(
            name=name,
            project_id=project_id,
            arn=arn,
            status=desc["ProjectStatus"],
            message=_message(desc),
            owner=self._owner(arn, project_id),
            group=_group(desc),
            pipeline=pipeline_name(name, project_id),
        )

    def _full(self, desc: dict) -> Project:
        project = self._project(desc)
        if project.status not in STANDING:
            return project  # no pipeline, stacks or endpoints yet (or any more)
        name, project_id = project.name, project.project_id
        stages, executions = self._pipeline(project.pipeline)
        return dataclasses.replace(
            project,
            stages=stages,
            executions=executions,
            staging_stack=self._stack(stack_name(name, project_id, "staging")),
            production_stack=self._stack(stack_name(name, project_id, "prod")),
            staging=self._endpoint(f"{name}-staging"),
            production=self._endpoint(f"{name}-prod"),
        )

    def _owner(self, arn: str, project_id: str) -> str:
        key = (arn, project_id)  # a project's ARN is by name: a new one of that name reuses it
        if key not in self._owners:
            with errors.aws(f"ListTags {arn}"):
                tags = self.sm.list_tags(ResourceArn=arn).get("Tags", [])
            owner = next((t["Value"] for t in tags if t["Key"] == OWNER_TAG), "")
            _remember(self._owners, key, owner)
        return self._owners[key]

    def _pipeline(
        self, pipeline: str
    ) -> tuple[tuple[PipelineStage, ...], tuple[remote.PipelineExecution, ...]]:
        cp = self.clients("codepipeline")
        state = call_or_none(f"GetPipelineState {pipeline}", cp.get_pipeline_state, name=pipeline)
        if state is None:
            return (), ()
        listed = call_or_none(
            f"ListPipelineExecutions {pipeline}",
            cp.list_pipeline_executions,
            pipelineName=pipeline,
            maxResults=EXECUTIONS_READ,
        )
        summaries = (listed or {}).get("pipelineExecutionSummaries", [])  # newest first
        executions = tuple(
            remote.PipelineExecution(
                e["pipelineExecutionId"], e.get("status", ""), e.get("statusSummary", "")
            )
            for e in summaries
            if e.get("pipelineExecutionId")
        )
        return tuple(_stage(s) for s in state.get("stageStates") or []), executions

    def _stack(self, name: str) -> Stack | None:
        cf = self.clients("cloudformation")
        found = call_or_none(f"DescribeStacks {name}", cf.describe_stacks, StackName=name)
        stack = next(iter((found or {}).get("Stacks") or []), None)
        return (
            Stack(name, stack["StackStatus"], stack.get("StackStatusReason", "")) if stack else None
        )

    def _endpoint(self, name: str) -> Endpoint | None:
        desc = call_or_none(
            f"DescribeEndpoint {name}", self.sm.describe_endpoint, EndpointName=name
        )
        if desc is None:
            return None
        config = desc.get("EndpointConfigName", "")
        return Endpoint(
            name=name,
            status=desc.get("EndpointStatus", ""),
            config_name=config,
            failure_reason=desc.get("FailureReason", ""),
            url=self.url(name),
            served_version=self._served_version(config),
        )

    def _served_version(self, config: str) -> int | None:
        """The package version behind the config's model (the pipeline made both from the
        ModelPackageName it chose). Kept per config: a config never changes."""
        if not config or config in self._served:
            return self._served.get(config)
        found = call_or_none(
            f"DescribeEndpointConfig {config}",
            self.sm.describe_endpoint_config,
            EndpointConfigName=config,
        )
        variants = (found or {}).get("ProductionVariants") or []
        model_name = variants[0].get("ModelName") if variants else None
        if not model_name:
            return None  # not remembered: a config read mid-creation may show more later
        what = f"DescribeModel {model_name}"
        model = call_or_none(what, self.sm.describe_model, ModelName=model_name)
        if model is None:
            return None
        containers = model.get("Containers") or [{}]
        package = containers[0].get("ModelPackageName") or (
            model.get("PrimaryContainer") or {}
        ).get("ModelPackageName", "")
        return _remember(self._served, config, version_of(package))

    # -- create -----------------------------------------------------------------------------------

    def create(self, request: remote.ProjectRequest) -> Project:
        existing = self._existing(request)
        if existing is not None:
            return existing
        kwargs = self._create_args(request)  # checks the preconditions first
        what = f"CreateProject {request.name}"
        try:
            created = self.sm.create_project(**kwargs)
        except ClientError as err:
            # The SDK's retry of a create whose answer was lost, or a race with another pass:
            # whose project it is decides.
            found = self._existing(request) if already_exists(err) else None
            if found is not None:
                return found
            raise self._create_error(err, what) from err
        except BotoCoreError as err:
            raise errors.from_aws(err, what) from err
        _remember(self._owners, (created["ProjectArn"], created["ProjectId"]), request.owner)
        # Until a describe sees it, it is what CreateProject answered: Pending.
        pid, arn = created["ProjectId"], created["ProjectArn"]
        pending = Project(request.name, pid, arn, "Pending", "", request.owner, request.group)
        return self.describe(request.name) or pending

    def _existing(self, request: remote.ProjectRequest) -> Project | None:
        desc = self._describe_project(request.name)
        if desc is None:
            return None
        project = self._project(desc)
        if project.owner != request.owner:
            raise errors.TerminalError(
                f"project {request.name} exists and belongs to "
                f"{project.owner or 'no ModelDeployment'} (tag {OWNER_TAG}), not "
                f"{request.owner}; choose another spec.deployment.project.name"
            )
        return self._full(desc)

    def _create_args(self, request: remote.ProjectRequest) -> dict[str, Any]:
        params = [
            {"Key": key, "Value": value}
            for key, value in ((GROUP_PARAMETER, request.group), *request.parameters)
        ]
        kwargs: dict[str, Any] = {
            "ProjectName": request.name,
            "ProjectDescription": request.description
            or f"Deploys model package group {request.group} for ModelDeployment {request.owner}",
            "Tags": [{"Key": OWNER_TAG, "Value": request.owner}],
        }
        if request.template_url:
            # Not a Service Catalog product: neither the portfolio nor its roles are involved.
            provider: dict[str, Any] = {
                "TemplateName": request.name,  # a project name fits (≤ 32, same pattern)
                "TemplateURL": request.template_url,
                "Parameters": params,
            }
            if request.role_arn:
                provider["RoleARN"] = request.role_arn
            kwargs["TemplateProviders"] = [{"CfnTemplateProvider": provider}]
            return kwargs
        catalog = Catalog(self.sm, self.clients)
        kwargs["ServiceCatalogProvisioningDetails"] = catalog.provisioning(request, params)
        return kwargs

    @staticmethod
    def _create_error(err: ClientError, what: str) -> Exception:
        message = errors.aws_message(err)
        if errors.aws_code(err) == "ValidationException" and "assuming the role" in message:
            return errors.TerminalError(
                f"{what}: {message}: Service Catalog could not assume the launch role "
                f"service-role/{LAUNCH_ROLE}; create it ({TOGGLE} does) and let "
                "servicecatalog.amazonaws.com assume it"
            )
        return errors.from_aws(err, what)

    # -- decide -----------------------------------------------------------------------------------

    def decide(self, decision: remote.GateDecision) -> None:
        what = f"PutApprovalResult {decision.pipeline} run {decision.execution_id}"
        try:
            self.clients("codepipeline").put_approval_result(
                pipelineName=decision.pipeline,
                stageName=remote.STAGING_STAGE,
                actionName=remote.GATE_ACTION,
                result={
                    "summary": decision.summary[:512],
                    "status": "Approved" if decision.approve else "Rejected",
                },
                token=decision.token,
            )
        except ClientError as err:
            code, meaning = errors.aws_code(err), GATE_MOVED.get(errors.aws_code(err))
            if meaning:
                text = f"{what}: {code}: {errors.aws_message(err)} ({meaning}); looking again"
                raise errors.GateMoved(text) from err
            raise errors.from_aws(err, what) from err
        except BotoCoreError as err:
            raise errors.from_aws(err, what) from err

    # -- delete -----------------------------------------------------------------------------------

    def delete(self, project: Project) -> tuple[bool, str]:
        name, project_id = project.name, project.project_id
        desc = self._describe_project(name)
        if desc is not None and desc["ProjectId"] != project_id:
            desc = None  # a new project of that name is not the one to delete
        status = desc["ProjectStatus"] if desc else DELETED
        if desc is not None and status != DELETING:
            # Removes the provisioned product (repository, pipeline, builds) only.
            call_or_none(f"DeleteProject {name}", self.sm.delete_project, ProjectName=name)
        # The pipeline made the stacks, and deleting them deletes the endpoints.
        stacks_gone = [self._delete_stack(stack_name(name, project_id, s)) for s in STAGES]
        if status == DELETE_FAILED:
            raise errors.TransientError(
                f"project {name} failed to delete ({_message(desc or {}) or 'no reason given'}); "
                "DeleteProject asked again"
            )
        left = f"bucket {bucket_name(project_id)} (the template retains it)"
        return desc is None and all(stacks_gone), left

    def _delete_stack(self, name: str) -> bool:
        """Start deleting the stack; True once it is gone."""
        stack = self._stack(name)
        if stack is None or stack.status == STACK_DELETED:
            return True
        if stack.status != STACK_DELETING:
            with errors.aws(f"DeleteStack {name}"):
                self.clients("cloudformation").delete_stack(StackName=name)
        return False
