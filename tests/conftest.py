"""Shared fixtures: the AWS emulator over HTTP, clients against it, and a real XGBoost artifact.

The emulator (moto's server) starts once per session, as a subprocess on loopback, and only for
tests that ask for it; every test that uses it starts from an empty emulator.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config
from emulator import REGION, ROLE_ARN, Emulator

from modeldeploy.providers import ProviderFactory

# Unimplemented emulator calls answer HTTP 500, which botocore would retry with backoff.
ONE_ATTEMPT = Config(retries={"mode": "standard", "max_attempts": 1})
BUCKET = "modeldeploy-test"


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    server = Emulator.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fresh_emulator(emulator: Emulator) -> Emulator:
    emulator.reset()
    return emulator


@pytest.fixture
def aws_env(fresh_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Emulator:
    """Point every boto3 client made in the test at the emulator, with fake credentials and
    none of the host's AWS configuration."""
    for var in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL_SAGEMAKER",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", fresh_emulator.url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials-absent"))
    # Clients made without an explicit Config (the provider's defaults) try once too.
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for var in ("NO_PROXY", "no_proxy"):  # botocore honours proxies; loopback needs none
        monkeypatch.setenv(var, ",".join(filter(None, [os.environ.get(var), "127.0.0.1"])))
    return fresh_emulator


@pytest.fixture(scope="session")
def boto_session() -> boto3.session.Session:
    # One session for the test clients: it caches service models, making each client ~10x
    # cheaper. Credentials, region and endpoint still come from aws_env's variables.
    return boto3.session.Session()


@pytest.fixture
def sagemaker_client(aws_env: Emulator, boto_session: boto3.session.Session):
    return boto_session.client("sagemaker", config=ONE_ATTEMPT)


@pytest.fixture
def runtime_client(aws_env: Emulator, boto_session: boto3.session.Session):
    return boto_session.client("sagemaker-runtime", config=ONE_ATTEMPT)


@pytest.fixture
def s3_client(aws_env: Emulator, boto_session: boto3.session.Session):
    return boto_session.client("s3", config=ONE_ATTEMPT)


@pytest.fixture
def bucket(s3_client) -> str:
    s3_client.create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def invoke_results(aws_env: Emulator) -> Callable[[list[dict]], None]:
    """Set canned InvokeEndpoint answers: invoke_results([{"Body": "0.5\\n",
    "ContentType": "text/csv"}])."""
    return aws_env.set_invoke_results


def build_model_tar(rounds: int = 3, seed: int = 7) -> bytes:
    """A tiny real XGBoost binary classifier as SageMaker's container wants it: a gzip tar
    with exactly one member, `xgboost-model`, in xgboost's native UBJ format."""
    import xgboost as xgb

    rng = np.random.default_rng(seed)
    features = rng.normal(size=(200, 4))
    labels = (features[:, 0] + 0.5 * features[:, 1] > 0).astype(int)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
        xgb.DMatrix(features, label=labels),
        num_boost_round=rounds,
    )
    model = bytes(booster.save_raw("ubj"))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("xgboost-model")
        info.size = len(model)
        tar.addfile(info, io.BytesIO(model))
    # mtime 0: the same rounds and seed give the same bytes, whenever the call is made
    # ("w:gz" stamps the current second into the gzip header).
    return gzip.compress(out.getvalue(), mtime=0)


@pytest.fixture(scope="session")
def model_tar_bytes() -> bytes:
    return build_model_tar()


@pytest.fixture
def upload(s3_client, bucket: str) -> Callable[[str, bytes], str]:
    """upload(key, body) -> the s3:// URI of a new object in the test bucket."""

    def put(key: str, body: bytes) -> str:
        s3_client.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    return put


@pytest.fixture
def model_artifact(upload: Callable[[str, bytes], str], model_tar_bytes: bytes) -> str:
    """s3:// URI of the tiny model, uploaded to the emulator's S3."""
    return upload("churn/1/model.tar.gz", model_tar_bytes)


@pytest.fixture
def role_arn() -> str:
    return ROLE_ARN


@pytest.fixture
def local_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local provider's directory for one test (MODELDEPLOY_LOCAL_DIR)."""
    monkeypatch.setenv("MODELDEPLOY_LOCAL_DIR", str(tmp_path / "local"))
    return tmp_path / "local"


@pytest.fixture
def local_providers(local_dir: Path) -> Iterator[ProviderFactory]:
    """A provider factory defaulting to `local`; every endpoint a test started is stopped."""
    factory = ProviderFactory(default="local")
    yield factory
    for provider in factory.built():
        for name in provider.hosting.names(""):
            provider.hosting.delete(name)
