"""boto3 helpers of the sagemaker provider. Which errors are retried is not decided here but in
`providers.errors`, the one policy every backend follows."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
)

from modeldeploy.providers.errors import aws_code, aws_message, from_aws

NOT_FOUND_CODES = frozenset(
    {"ResourceNotFound", "ResourceNotFoundException", "NoSuchKey", "404",
     # CodePipeline: a project's pipeline is made a little after the project says complete.
     "PipelineNotFoundException"}
)  # fmt: skip
_NOT_FOUND = re.compile(r"could not find|does not exist|not found", re.IGNORECASE)


def is_not_found(err: ClientError) -> bool:
    """SageMaker reports most missing resources as ValidationException "Could not find ...",
    CloudFormation a stack never made (or deleted, asked by name) as ValidationError "... does
    not exist"."""
    code = aws_code(err)
    if code in NOT_FOUND_CODES:
        return True
    validation = code in ("ValidationException", "ValidationError")
    return validation and bool(_NOT_FOUND.search(aws_message(err)))


def already_exists(err: ClientError) -> bool:
    # Groups: "... already exists"; models, endpoint configs and endpoints: "Cannot create
    # already existing ...".
    return "already exist" in aws_message(err).lower()


def retry_only_refusals(
    response: tuple[Any, dict] | None = None,
    caught_exception: Exception | None = None,
    **_: Any,
) -> bool | None:
    """A `needs-retry` handler for creates that are not idempotent: False (no retry) when the
    server may have done the work (a 5xx, a timeout or a cut connection after sending); None,
    leaving it to the SDK's retry policy, when the request was refused or never sent."""
    if caught_exception is not None:
        never_sent = isinstance(caught_exception, EndpointConnectionError | ConnectTimeoutError)
        return None if never_sent else False
    if response is not None and response[0].status_code >= 500:
        return False
    return None


def call_or_none(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a Describe* or Delete*; None when the resource does not exist."""
    try:
        return fn(**kwargs)
    except ClientError as err:
        if is_not_found(err):
            return None
        raise from_aws(err, what) from err
    except BotoCoreError as err:
        raise from_aws(err, what) from err
