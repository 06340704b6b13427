"""SageMaker hosting side of the sagemaker provider: models, endpoint configs, endpoints.

Models and endpoint configs are immutable and named by content hash (naming.py), so deploying
is "create what is missing, then point the endpoint at the config". Every create is preceded by
a describe: SageMaker refuses duplicates (and the emulator silently overwrites them), so a
restarted operator must find what it created before instead of creating it twice.
"""

from __future__ import annotations

import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modeldeploy import naming
from modeldeploy.providers.base import TerminalError, TransientError
from modeldeploy.providers.sagemaker_registry import (
    Registry,
    aws,
    call_or_none,
    is_not_found,
    translate,
)
from modeldeploy.reconcile.actions import DeployEndpoint
from modeldeploy.remote import TRANSITIONAL_ENDPOINT_STATUSES, Endpoint, InvokeResult

VERSION_TAG = "modeldeploy.dev/version"
STAGE_TAG = "modeldeploy.dev/stage"
VARIANT = "AllTraffic"


class Hosting:
    def __init__(
        self, sm: Any, runtime: Any, registry: Registry, region: str, role_arn: str | None
    ) -> None:
        self.sm = sm
        self.runtime = runtime
        self.registry = registry
        self.region = region
        self.role_arn = role_arn

    def url(self, endpoint: str) -> str:
        # The runtime client's endpoint honours AWS_ENDPOINT_URL, so this is right for emulators.
        return f"{self.runtime.meta.endpoint_url}/endpoints/{endpoint}/invocations"

    def describe_endpoint(self, name: str) -> Endpoint | None:
        desc = call_or_none(
            f"DescribeEndpoint {name}", self.sm.describe_endpoint, EndpointName=name
        )
        if desc is None:
            return None
        return Endpoint(
            name=name,
            status=desc.get("EndpointStatus", ""),
            config_name=desc.get("EndpointConfigName", ""),
            failure_reason=desc.get("FailureReason", ""),
            url=self.url(name),
        )

    def list_endpoints(self, name_contains: str) -> dict[str, str]:
        """Endpoint name -> status for names containing `name_contains`."""
        out: dict[str, str] = {}
        kwargs: dict[str, Any] = {"NameContains": name_contains, "MaxResults": 100}
        with aws(f"ListEndpoints {name_contains}"):
            while True:
                page = self.sm.list_endpoints(**kwargs)
                for item in page.get("Endpoints", []):
                    out[item["EndpointName"]] = item.get("EndpointStatus", "")
                if not page.get("NextToken"):
                    return out
                kwargs["NextToken"] = page["NextToken"]

    # -- deploy -----------------------------------------------------------------------------------

    def _account(self) -> str:
        if not self.role_arn:
            raise TerminalError("spec.roleArn is required to deploy to SageMaker")
        return self.role_arn.split(":")[4]

    def _ensure_model(self, name: str, version_arn: str, version: int) -> None:
        if call_or_none(f"DescribeModel {name}", self.sm.describe_model, ModelName=name):
            return
        self._account()  # fails early, with a clear message, when there is no role
        with aws(f"CreateModel {name}"):
            # From the versioned package: SageMaker takes image and artifact from it, keeps the
            # link for lineage, and refuses a package that is not Approved.
            self.sm.create_model(
                ModelName=name,
                ExecutionRoleArn=self.role_arn,
                Containers=[{"ModelPackageName": version_arn}],
                Tags=[{"Key": VERSION_TAG, "Value": str(version)}],
            )

    def _ensure_config(self, action: DeployEndpoint, model: str) -> None:
        name = action.config_name
        if call_or_none(
            f"DescribeEndpointConfig {name}",
            self.sm.describe_endpoint_config,
            EndpointConfigName=name,
        ):
            return
        kwargs: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": [
                {
                    "VariantName": VARIANT,
                    "ModelName": model,
                    "InitialInstanceCount": action.instance_count,
                    "InstanceType": action.instance_type,
                    "InitialVariantWeight": 1.0,
                }
            ],
            "Tags": [
                {"Key": VERSION_TAG, "Value": str(action.version)},
                {"Key": STAGE_TAG, "Value": action.stage},
            ],
        }
        if action.data_capture_percent > 0:
            destination = (
                action.data_capture_destination
                or f"s3://sagemaker-{self.region}-{self._account()}/modeldeploy/datacapture"
            )
            kwargs["DataCaptureConfig"] = {
                "EnableCapture": True,
                "InitialSamplingPercentage": action.data_capture_percent,
                "DestinationS3Uri": destination,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {
                    "CsvContentTypes": ["text/csv"],
                    "JsonContentTypes": ["application/json", "application/jsonlines"],
                },
            }
        with aws(f"CreateEndpointConfig {name}"):
            self.sm.create_endpoint_config(**kwargs)

    def deploy(self, action: DeployEndpoint) -> None:
        # A versioned package is immutable: its ARN names the image and artifact too.
        model = action.model_name or naming.model_name(action.endpoint_name, action.version_arn)
        self._ensure_model(model, action.version_arn, action.version)
        self._ensure_config(action, model)

        name = action.endpoint_name
        current = self.describe_endpoint(name)  # `action.update` is a hint; the remote decides
        if current is None:
            with aws(f"CreateEndpoint {name}"):
                self.sm.create_endpoint(
                    EndpointName=name,
                    EndpointConfigName=action.config_name,
                    Tags=[{"Key": STAGE_TAG, "Value": action.stage}],
                )
        elif current.config_name == action.config_name and current.status != "Failed":
            return  # already asked for before a restart
        elif current.status in TRANSITIONAL_ENDPOINT_STATUSES:
            raise TransientError(f"endpoint {name} is {current.status}; retrying later")
        elif current.status == "Failed":
            raise TerminalError(
                f"endpoint {name} failed ({current.failure_reason or 'no reason given'}); "
                "SageMaker cannot update a failed endpoint: delete it first"
            )
        else:
            with aws(f"UpdateEndpoint {name}"):
                self.sm.update_endpoint(EndpointName=name, EndpointConfigName=action.config_name)

    # -- invoke -----------------------------------------------------------------------------------

    def invoke(self, endpoint_name: str, payload: str, content_type: str) -> InvokeResult:
        start = time.perf_counter()
        with aws(f"InvokeEndpoint {endpoint_name}"):
            resp = self.runtime.invoke_endpoint(
                EndpointName=endpoint_name,
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

    def delete_endpoint(self, name: str) -> bool:
        current = self.describe_endpoint(name)
        if current is not None:
            if current.status != "Deleting":
                self._delete(f"DeleteEndpoint {name}", self.sm.delete_endpoint, EndpointName=name)
            if self.describe_endpoint(name) is not None:
                return False
        # The endpoint is gone: its configs and models (all named "<endpoint>-...") are unused.
        for config in self._names(self.sm.list_endpoint_configs, "EndpointConfigs", name):
            self._delete(
                f"DeleteEndpointConfig {config}",
                self.sm.delete_endpoint_config,
                EndpointConfigName=config,
            )
        for model in self._names(self.sm.list_models, "Models", name):
            self._delete(f"DeleteModel {model}", self.sm.delete_model, ModelName=model)
        return True

    def _names(self, list_call: Any, key: str, endpoint: str) -> list[str]:
        field = "EndpointConfigName" if key == "EndpointConfigs" else "ModelName"
        names: list[str] = []
        kwargs: dict[str, Any] = {"NameContains": endpoint, "MaxResults": 100}
        with aws(f"List{key} {endpoint}"):
            while True:
                page = list_call(**kwargs)
                names += [i[field] for i in page.get(key, [])]
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        return [n for n in names if n.startswith(f"{endpoint}-")]

    @staticmethod
    def _delete(what: str, fn: Any, **kwargs: Any) -> None:
        try:
            fn(**kwargs)
        except ClientError as err:
            if not is_not_found(err):
                raise translate(err, what) from err
        except BotoCoreError as err:
            raise translate(err, what) from err
