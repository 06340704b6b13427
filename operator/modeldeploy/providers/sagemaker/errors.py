"""boto3 helpers of the sagemaker provider. Which errors are retried is not decided here but in
`providers.errors`, the one policy every backend follows."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from modeldeploy.providers.errors import aws_code, aws_message, from_aws

NOT_FOUND_CODES = frozenset({"ResourceNotFound", "ResourceNotFoundException", "NoSuchKey", "404"})
_NOT_FOUND = re.compile(r"could not find|does not exist|not found", re.IGNORECASE)


def is_not_found(err: ClientError) -> bool:
    """SageMaker reports most missing resources as ValidationException "Could not find ..."."""
    code = aws_code(err)
    if code in NOT_FOUND_CODES:
        return True
    return code == "ValidationException" and bool(_NOT_FOUND.search(aws_message(err)))


def already_exists(err: ClientError) -> bool:
    return "already exists" in aws_message(err).lower()


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
