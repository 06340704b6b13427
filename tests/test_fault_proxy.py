"""A batch of ModelDeployments converges through a proxy that breaks a fifth of the operator's
AWS calls (throttling, 5xx, timeouts, dropped connections, before and after the emulator did
the work), and leaves no duplicates: tests/faultproxy.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from driver import Resource
from emulator import REGION, Emulator
from faultproxy import (
    SMOKE_ANSWER,
    Drive,
    FaultProxy,
    audit,
    batch_spec,
    drive,
    operator_providers,
)

READ_TIMEOUT = 1.0  # the operator's clients', shortened so that a test can wait it out
BATCH = 4
MAX_ROUNDS = 30


@pytest.fixture
def proxy(aws_env: Emulator) -> Iterator[FaultProxy]:
    proxy = FaultProxy(aws_env.url, rate=0.2, seed=11, delay=READ_TIMEOUT + 0.5).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def converge(resources: list[Resource], proxy: FaultProxy, rounds: int = MAX_ROUNDS) -> Drive:
    """Drive the resources with clients that reach the emulator through the proxy (they are
    made at the first pass) and the SDK's own retry count: aws_env's one attempt is for tests
    that count calls."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", proxy.url)
        mp.delenv("AWS_MAX_ATTEMPTS", raising=False)
        return drive(resources, rounds)


def batch(
    n: int, upload: Callable[[str, bytes], str], model_tar: bytes, role_arn: str
) -> list[Resource]:
    providers = operator_providers(READ_TIMEOUT)
    return [
        Resource(
            batch_spec(i, upload(f"faults/{i}/model.tar.gz", model_tar), role_arn, REGION),
            providers=providers,
            name=f"model-{i}",
            namespace="faults",
        )
        for i in range(n)
    ]


def test_a_batch_converges_through_faults_without_duplicates(
    sagemaker_client, upload, model_tar_bytes, role_arn, invoke_results, proxy
) -> None:
    invoke_results([SMOKE_ANSWER])
    resources = batch(BATCH, upload, model_tar_bytes, role_arn)  # uploaded without faults
    result = converge(resources, proxy)
    tally = proxy.tally.as_dict()
    assert result.stalls == [], result.stalls
    assert result.ready, [(r.status.get("phase"), r.status.get("message")) for r in resources]
    assert audit(sagemaker_client, resources) == []
    # The run met every kind of fault, and lost answers to the calls that create.
    assert {k.split("-")[0] for k in tally["faults_by_kind"]} >= {"throttle", "timeout", "drop"}
    lost = [
        op
        for op, kinds in tally["faults_by_operation"].items()
        if op.startswith("Create") and any(k.endswith("-after") for k in kinds)
    ]
    assert lost, tally
    # About the rate asked (0.2): a pipeline makes ~11 calls now, so ~70 requests in all
    assert 0.1 < tally["faults"] / tally["requests"] < 0.35, tally


# Every create loses its answer once, after the emulator did the work. Before the SDK was kept
# from re-sending an unanswered CreateModelPackage, its retry registered version 2 of the same
# bytes (the emulator ignores ClientToken).
LOST_ANSWERS = [
    ("CreateModelPackageGroup", "drop", 1),
    ("CreateModelPackage", "error500", 1),
    ("CreateModel", "drop", 1),
    ("CreateEndpointConfig", "timeout", 1),
    ("CreateEndpoint", "drop", 2),
    ("UpdateModelPackage", "error503", 1),
]


def test_creates_whose_answers_are_lost_are_not_repeated(
    sagemaker_client, upload, model_tar_bytes, role_arn, invoke_results, proxy
) -> None:
    invoke_results([SMOKE_ANSWER])
    resources = batch(1, upload, model_tar_bytes, role_arn)
    proxy.rate = 0.0  # only the faults forced here
    for op, kind, times in LOST_ANSWERS:
        proxy.force(op, kind, "after", times)
    result = converge(resources, proxy, rounds=15)
    assert (result.stalls, result.ready) == ([], True), resources[0].status.get("message")
    assert audit(sagemaker_client, resources) == []
    assert sum(proxy.tally.faults.values()) == sum(times for *_, times in LOST_ANSWERS)
    # Sent once: neither the SDK nor the next pass (which found the version by its digest)
    # sent it again.
    assert proxy.tally.calls["CreateModelPackage"] == 1
    assert resources[0].status["production"]["version"] == 1


def test_the_proxy_speaks_aws_errors(aws_env: Emulator, proxy: FaultProxy) -> None:
    """The injected throttling reads as SageMaker's own (botocore sees ThrottlingException,
    which the one error policy retries) and S3's as SlowDown; cut answers are connection
    errors."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError

    from modeldeploy.providers.errors import TransientError, from_aws

    once = Config(retries={"total_max_attempts": 1}, read_timeout=READ_TIMEOUT)
    sm = boto3.client("sagemaker", endpoint_url=proxy.url, config=once)
    s3 = boto3.client("s3", endpoint_url=proxy.url, config=once)
    proxy.rate = 0.0
    proxy.force("ListModelPackageGroups", "throttle", "before")
    proxy.force("S3 GET", "throttle", "before")
    proxy.force("ListEndpoints", "drop", "after")
    proxy.force("ListModels", "timeout", "before")
    for call, code in ((sm.list_model_package_groups, "ThrottlingException"),
                       (s3.list_buckets, "SlowDown")):  # fmt: skip
        with pytest.raises(ClientError) as caught:
            call()
        assert caught.value.response["Error"]["Code"] == code
        assert isinstance(from_aws(caught.value, "call"), TransientError)
    with pytest.raises(ConnectionClosedError):
        sm.list_endpoints()
    with pytest.raises(ReadTimeoutError):
        sm.list_models()
    assert sm.list_model_package_groups()["ModelPackageGroupSummaryList"] == []
    assert proxy.tally.forwarded == 2  # the dropped ListEndpoints and the last call


def test_a_half_sent_request_is_not_forwarded(aws_env: Emulator, proxy: FaultProxy) -> None:
    """A client killed between its headers and the end of its body (test_ha's SIGKILL) sent
    no request: the proxy must not pass the stump on, as no server would act on it."""
    import socket
    from urllib.parse import urlsplit

    proxy.rate = 0.0
    where = urlsplit(proxy.url)
    with socket.create_connection((where.hostname, where.port)) as client:
        client.sendall(
            b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: SageMaker.CreateModel\r\n"
            b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 100\r\n\r\n"
            b'{"ModelName": '
        )
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1024) == b""  # closed without an answer
    assert proxy.tally.forwarded == 0
