"""The sagemaker provider's hosting: models, endpoint configs and endpoints.

Models and endpoint configs are immutable and named by content hash (naming.py), so deploying
is "create what is missing, then point the endpoint at the config". They are created without a
describe first: a name fixes the content, so SageMaker's "already existing" is success (the
emulator overwrites the same content). An endpoint is described before an update only when the
region's view says it may exist; every describe and every change goes through that view.
"""

from __future__ import annotations

import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modeldeploy import naming
from modeldeploy.providers.errors import TerminalError, TransientError, aws, from_aws
from modeldeploy.providers.sagemaker.errors import already_exists, call_or_none
from modeldeploy.providers.sagemaker.listing import endpoint_statuses, list_all
from modeldeploy.providers.sagemaker.views import EndpointsView
from modeldeploy.remote import DeployRequest, Endpoint, EndpointStatus, InvokeResult

VERSION_TAG = "modeldeploy.dev/version"
STAGE_TAG = "modeldeploy.dev/stage"
VARIANT = "AllTraffic"


def create(what: str, fn: Any, **kwargs: Any) -> dict | None:
    """A Create* whose name fixes what it creates: "already existing" is success (None). It is
    what SageMaker answers the SDK's retry of a create whose first answer was lost (the
    emulator overwrites instead), and what a create racing another pass of the same resource
    meets."""
    try:
        return fn(**kwargs)
    except ClientError as err:
        if not already_exists(err):
            raise from_aws(err, what) from err
    except BotoCoreError as err:
        raise from_aws(err, what) from err
    return None


def server_time(response: dict) -> datetime | None:
    """When the server answered, by its own clock (its Date header)."""
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None


class SageMakerHosting:
    def __init__(
        self,
        sm: Any,
        runtime: Any,
        region: str,
        endpoints: EndpointsView,
        default_role: str | None = None,
    ) -> None:
        self.sm = sm
        self.runtime = runtime
        self.region = region
        self.endpoints = endpoints
        # For callers that build requests without a role (tests, scripts); the operator's
        # requests always carry the resource's own spec.roleArn.
        self.default_role = default_role

    def url(self, endpoint: str) -> str:
        # The runtime client's endpoint honours AWS_ENDPOINT_URL, so this is right for emulators.
        return f"{self.runtime.meta.endpoint_url}/endpoints/{endpoint}/invocations"

    def describe(self, name: str) -> Endpoint | None:
        desc = call_or_none(
            f"DescribeEndpoint {name}", self.sm.describe_endpoint, EndpointName=name
        )
        found = None
        if desc is not None:
            found = Endpoint(
                name=name,
                status=desc.get("EndpointStatus", ""),
                config_name=desc.get("EndpointConfigName", ""),
                failure_reason=desc.get("FailureReason", ""),
                url=self.url(name),
            )
        self.endpoints.described(name, found)
        return found

    def list_endpoints(self, name_contains: str) -> dict[str, str]:
        """Endpoint name -> status for names containing `name_contains`."""
        with aws(f"ListEndpoints {name_contains}"):
            return endpoint_statuses(self.sm, NameContains=name_contains)

    def names(self, prefix: str) -> list[str]:
        return sorted(n for n in self.list_endpoints(prefix) if n.startswith(prefix))

    def _list(self, call: Any, key: str, name_contains: str) -> list[dict]:
        with aws(f"List{key} {name_contains}"):
            return list_all(call, key, NameContains=name_contains)[0]

    # -- deploy -----------------------------------------------------------------------------------

    def _role(self, request: DeployRequest) -> str:
        role = request.role_arn or self.default_role
        if not role:
            raise TerminalError("spec.roleArn is required to deploy to SageMaker")
        return role

    def _account(self, request: DeployRequest) -> str:
        return self._role(request).split(":")[4]

    def _ensure_model(self, request: DeployRequest, name: str) -> None:
        role = self._role(request)  # fails early, with a clear message, when there is none
        version_arn, version = request.version.arn, request.version.version
        # From the versioned package: SageMaker takes image and artifact from it, keeps the
        # link for lineage, and refuses a package that is not Approved.
        create(
            f"CreateModel {name}",
            self.sm.create_model,
            ModelName=name,
            ExecutionRoleArn=role,
            Containers=[{"ModelPackageName": version_arn}],
            Tags=[{"Key": VERSION_TAG, "Value": str(version)}],
        )

    def _ensure_config(self, request: DeployRequest, model: str) -> None:
        name = request.config_name
        kwargs: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": VARIANT,
                    "ModelName": model,
                    "InitialInstanceCount": request.instance_count,
                    "InstanceType": request.instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
            "Tags": [
                {"Key": VERSION_TAG, "Value": str(request.version.version)},
                {"Key": STAGE_TAG, "Value": request.stage},
            ],
        }
        if request.data_capture_percent > 0:
            destination = (
                request.data_capture_destination
                or f"s3://sagemaker-{self.region}-{self._account(request)}/modeldeploy/datacapture"
            )
            kwargs["DataCaptureConfig"] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": request.data_capture_percent,
                "DestinationS3Uri": destination,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {
                    "CsvContentTypes": ["text/csv"],
                    "JsonContentTypes": ["application/json", "application/jsonlines"],
                },
            }
        create(f"CreateEndpointConfig {name}", self.sm.create_endpoint_config, **kwargs)

    def deploy(self, request: DeployRequest) -> None:
        name = request.endpoint_name
        # Whether it exists is the remote's to say: described unless the region's listing
        # (fresher than any create of ours) says it is not there.
        current = self.describe(name) if self.endpoints.maybe_exists(name) else None
        if (
            current is not None
            and current.config_name == request.config_name
            and current.status != EndpointStatus.FAILED
        ):
            return  # already asked for (before a restart, or by a pass whose status was lost)
        if current is not None and EndpointStatus.is_transitional(current.status):
            raise TransientError(f"endpoint {name} is {current.status}; retrying later")
        if current is not None and current.status == EndpointStatus.FAILED:
            raise TerminalError(
                f"endpoint {name} failed ({current.failure_reason or 'no reason given'}); "
                "SageMaker cannot update a failed endpoint: delete it first"
            )
        # A versioned package is immutable: its ARN names the image and artifact too.
        model = naming.model_name(name, request.version.arn)
        self._ensure_model(request, model)
        self._ensure_config(request, model)
        self.endpoints.touch(name)  # whatever the answer, the next look describes it
        if current is None:
            # Already existing: the next pass describes it to read which config it serves,
            # and updates it if that is not ours.
            created = create(
                f"CreateEndpoint {name}",
                self.sm.create_endpoint,
                EndpointName=name,
                EndpointConfigName=request.config_name,
                Tags=[{"Key": STAGE_TAG, "Value": request.stage}],
            )
            if created is not None:
                self.endpoints.created(name, request.config_name, server_time(created))
        else:
            self._update(name, request.config_name)

    def _update(self, name: str, config: str) -> None:
        what = f"UpdateEndpoint {name}"
        try:
            self.sm.update_endpoint(EndpointName=name, EndpointConfigName=config)
        except ClientError as err:
            # An update whose answer was lost left the endpoint Updating, and the SDK's retry
            # meets "Cannot update in-progress endpoint": wait, as for any update in flight.
            now = self.describe(name)
            if now is not None and EndpointStatus.is_transitional(now.status):
                text = f"{what}: the endpoint is {now.status}; retrying later"
                raise TransientError(text) from err
            raise from_aws(err, what) from err
        except BotoCoreError as err:
            raise from_aws(err, what) from err

    # -- invoke -----------------------------------------------------------------------------------

    def invoke(self, name: str, payload: str, content_type: str) -> InvokeResult:
        start = time.perf_counter()
        with aws(f"InvokeEndpoint {name}"):
            resp = self.runtime.invoke_endpoint(
                EndpointName=name,
                Body=payload.encode(),
                ContentType=content_type,
                Accept="text/csv",
            )
            body = resp["Body"].read()
        latency_ms = (time.perf_counter() - start) * 1000.0
        return InvokeResult(
            body=body, content_type=resp.get("ContentType", ""), latency_ms=latency_ms
        )

    # -- delete -----------------------------------------------------------------------------------

    def delete(self, name: str) -> bool:
        self.endpoints.touch(name)
        current = self.describe(name)
        if current is not None:
            if current.status != EndpointStatus.DELETING:
                call_or_none(f"DeleteEndpoint {name}", self.sm.delete_endpoint, EndpointName=name)
            if self.describe(name) is not None:
                return False
        # The endpoint is gone: its configs and models (all named "<endpoint>-...") are unused.
        for item in self._list(self.sm.list_endpoint_configs, "EndpointConfigs", name):
            config = item["EndpointConfigName"]
            if config.startswith(f"{name}-"):
                call_or_none(
                    f"DeleteEndpointConfig {config}",
                    self.sm.delete_endpoint_config,
                    EndpointConfigName=config,
                )
        for item in self._list(self.sm.list_models, "Models", name):
            model = item["ModelName"]
            if model.startswith(f"{name}-"):
                call_or_none(f"DeleteModel {model}", self.sm.delete_model, ModelName=model)
        return True
