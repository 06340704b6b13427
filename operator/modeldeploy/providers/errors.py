"""The one error policy: which failures are retried (transient) and which stall (terminal).

Every backend's errors are classified here, from data: AWS error codes, HTTP statuses (the
Kubernetes API and endpoints speak HTTP too), and local I/O. A terminal error stalls only the
input that caused it until the spec changes; a transient one is retried with backoff. The
message of either is shown to people, so it names the call and keeps the remote's own words.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class ProviderError(Exception):
    """Base of provider errors; the message is shown to users, so make it actionable."""


class TransientError(ProviderError):
    """Throttling, 5xx, timeouts, conflicts: retried with backoff."""


class TerminalError(ProviderError):
    """The same input will fail again (bad artifact, access denied, validation): stall."""


class GateMoved(ProviderError):
    """A pipeline's approval gate is no longer where the pass saw it: the token went stale, a
    person decided it first, or a newer run took its place. Never retried with the same token:
    the next pass looks again and decides anew."""


# AWS error codes that mean "try again" whatever the HTTP status says (ACK keeps such lists
# per resource; ours are the same for every call we make).
AWS_TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "SlowDown",
    }
)
# HTTP statuses that are worth retrying: timeout, conflict (a concurrent writer), throttling.
HTTP_TRANSIENT = frozenset({408, 409, 429})
# HTTP statuses whose message should say who must act.
HTTP_HINTS = {
    401: "the operator's credentials were refused",
    403: "the operator's identity (RBAC or IAM) must allow it",
}
# Local I/O that a retry can fix; everything else (missing file, permission) stalls.
OS_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EINTR, errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ETIMEDOUT}
)


def http_is_transient(status: int) -> bool:
    return status in HTTP_TRANSIENT or status >= 500


def from_http(status: int, message: str) -> ProviderError:
    """An HTTP error answer (Kubernetes API, an endpoint) as a provider error."""
    hint = HTTP_HINTS.get(status)
    text = f"{message} ({hint})" if hint else message
    return TransientError(text) if http_is_transient(status) else TerminalError(text)


def from_endpoint(status: int, message: str) -> TerminalError:
    """An endpoint's own error answer is the model's verdict on the payload: terminal, as
    SageMaker reports any error status of its container (ModelError)."""
    return TerminalError(f"HTTP {status}: {message}")


def unreachable(err: Exception, what: str) -> TransientError:
    """No answer at all (refused, reset, timed out): it may answer later."""
    return TransientError(f"{what}: {err}")


def read_only_refusal(what: str) -> TerminalError:
    """What a provider built only to observe (a preview) answers to a change."""
    return TerminalError(f"{what}: refused, this provider only observes (read-only)")


def from_os(err: OSError, what: str) -> ProviderError:
    text = f"{what}: {err.strerror or err}"
    return TransientError(text) if err.errno in OS_TRANSIENT_ERRNOS else TerminalError(text)


def aws_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def aws_message(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(err)


def from_aws(err: Exception, what: str) -> ProviderError:
    """A botocore error as a provider error, keeping AWS's own message."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(err, ClientError):
        code = aws_code(err)
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        text = f"{what}: {code or status}: {aws_message(err)}"
        if code in AWS_TRANSIENT_CODES or http_is_transient(status):
            return TransientError(text)
        return from_http(status, text) if status in HTTP_HINTS else TerminalError(text)
    if isinstance(err, ConnectionError | HTTPClientError):
        return unreachable(err, what)
    # NoCredentialsError, ParamValidationError, ...: the same call fails again.
    return TerminalError(f"{what}: {err}")


@contextmanager
def aws(what: str) -> Iterator[None]:
    """Translate botocore errors raised inside into provider errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (ClientError, BotoCoreError) as err:
        raise from_aws(err, what) from err
