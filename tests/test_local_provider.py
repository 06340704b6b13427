"""The embedded `local` provider: the whole pipeline on one machine, real `modeldeploy serve`
processes answering real XGBoost predictions, supervised through restarts and crashes. What
every provider does (registration, approval, deploy, delete, observe) is in
tests/test_provider_contract.py; this is what is particular to this one."""

from __future__ import annotations

import os
import signal
import tarfile
import time
import urllib.request
from pathlib import Path

import boto3
import numpy as np
import pytest
import xgboost
from driver import Resource
from providers import deploy_request

from modeldeploy import naming
from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.errors import TerminalError
from modeldeploy.providers.local import RESYNC_ENV, LocalProvider
from modeldeploy.remote import DeployRequest
from modeldeploy.spec import SpecError, parse_spec
from modeldeploy.training.train import train


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two real models with different bytes, as `modeldeploy train` writes them."""
    root = tmp_path_factory.mktemp("models")
    return train(root / "a", progress=False), train(root / "b", seed=1, progress=False)


def heldout(model) -> tuple[np.ndarray, str]:
    rows = np.loadtxt(model.heldout, delimiter=",")
    features = rows[:, 1:]
    payload = "\n".join(",".join(repr(float(v)) for v in row) for row in features[:20])
    return features[:20], payload


def expected(model, features: np.ndarray) -> np.ndarray:
    booster = xgboost.Booster()
    with tarfile.open(model.model_tar) as tar:
        booster.load_model(bytearray(tar.extractfile("xgboost-model").read()))
    return booster.predict(xgboost.DMatrix(features))


def predict(url: str, payload: str) -> np.ndarray:
    request = urllib.request.Request(
        url, data=payload.encode(), headers={"Content-Type": "text/csv"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return np.array([float(x) for x in resp.read().decode().split()])


def resource(models, local_providers: ProviderFactory, **spec) -> Resource:
    _, payload = heldout(models[0])
    base = {
        "provider": "local",
        "modelPackageGroup": {"name": "breast-cancer"},
        "model": {"artifact": f"file://{models[0].model_tar}", "metrics": models[0].metrics},
        "staging": {"smokeTest": {"payload": payload.splitlines()[0], "maxLatencyMs": 5000}},
    }
    base.update(spec)
    return Resource(base, providers=local_providers, name="bc", namespace="demo")


def test_pipeline_serves_real_predictions_and_rolls_back(models, local_providers):
    res = resource(models, local_providers)
    res.settle("PendingApproval")
    res.edit_spec(
        lambda s: (
            s["approval"].update(approvedVersion=1)
            if "approval" in s
            else s.update(approval={"approvedVersion": 1})
        )
    )
    status = res.settle("AwaitingPromotion")
    assert status["staging"]["smokeTest"]["passed"] is True
    features, payload = heldout(models[0])
    np.testing.assert_allclose(
        predict(status["staging"]["url"], payload), expected(models[0], features), atol=1e-6
    )

    res.edit_spec(lambda s: s.update(production={"promotedVersion": 1}))
    status = res.settle("Deployed")
    assert res.condition("Ready") == ("True", "Deployed")
    np.testing.assert_allclose(
        predict(status["production"]["url"], payload), expected(models[0], features), atol=1e-6
    )

    # Version 2: a new artifact, approved, promoted; production moves and remembers version 1.
    def second(spec: dict) -> None:
        spec["model"] = {"artifact": f"file://{models[1].model_tar}", "metrics": models[1].metrics}
        spec["approval"] = {"approvedVersion": 2}
        spec["production"] = {"promotedVersion": 2}

    res.edit_spec(second)
    status = res.settle("Deployed")
    assert status["production"]["version"] == 2
    assert status["production"]["previousVersion"] == 1
    np.testing.assert_allclose(
        predict(status["production"]["url"], payload), expected(models[1], features), atol=1e-6
    )

    # Rollback is one field.
    res.edit_spec(lambda s: s.update(production={"promotedVersion": 1}))
    status = res.settle("Deployed")
    assert status["production"]["version"] == 1
    assert status["production"]["previousVersion"] == 2
    np.testing.assert_allclose(
        predict(status["production"]["url"], payload), expected(models[0], features), atol=1e-6
    )


def deploy_first_version(models, local_dir: Path) -> tuple[LocalProvider, DeployRequest]:
    provider = LocalProvider(local_dir)
    spec = parse_spec(
        {
            "provider": "local",
            "modelPackageGroup": {"name": "g"},
            "model": {"artifact": f"file://{models[0].model_tar}"},
        }
    )
    provider.registry.ensure_group("g", None)
    version = provider.registry.register_version(spec)
    endpoint = naming.endpoint_name("ns", "x", "staging")
    action = deploy_request(version, endpoint, config_name="cfg-1")
    provider.hosting.deploy(action)
    return provider, action


def wait_status(provider: LocalProvider, name: str, wanted: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        endpoint = provider.hosting.describe(name)
        if endpoint and endpoint.status == wanted:
            return endpoint
        time.sleep(0.2)
    raise AssertionError(f"{name} never became {wanted}: {provider.hosting.describe(name)}")


def pid_of(provider: LocalProvider, name: str) -> int:
    return provider.state.endpoint(name).pid


def test_restart_while_creating_adopts_the_same_process(models, local_dir):
    provider, action = deploy_first_version(models, local_dir)
    try:
        assert provider.hosting.describe(action.endpoint_name).status == "Creating"
        pid = pid_of(provider, action.endpoint_name)
        restarted = LocalProvider(local_dir)  # a new operator process, same state directory
        endpoint = wait_status(restarted, action.endpoint_name, "InService")
        assert pid_of(restarted, action.endpoint_name) == pid
        restarted.hosting.deploy(action)  # the same config again changes nothing
        assert pid_of(restarted, action.endpoint_name) == pid
        assert endpoint.url.startswith("http://127.0.0.1:")
    finally:
        provider.hosting.delete(action.endpoint_name)


def test_killed_endpoint_is_reported_and_brought_back(models, local_dir):
    provider, action = deploy_first_version(models, local_dir)
    try:
        wait_status(provider, action.endpoint_name, "InService")
        pid = pid_of(provider, action.endpoint_name)
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        seen = provider.hosting.describe(action.endpoint_name)
        assert seen.status == "SystemUpdating"
        assert f"process {pid} exited" in seen.failure_reason
        endpoint = wait_status(provider, action.endpoint_name, "InService")
        assert pid_of(provider, action.endpoint_name) != pid
        features, payload = heldout(models[0])
        np.testing.assert_allclose(
            predict(endpoint.url, payload), expected(models[0], features), atol=1e-6
        )
    finally:
        provider.hosting.delete(action.endpoint_name)


def test_server_that_dies_at_start_fails_with_its_reason(models, local_dir):
    provider, action = deploy_first_version(models, local_dir)
    provider.hosting.delete(action.endpoint_name)
    Path(action.version.artifact).write_bytes(b"not a tar")  # the stored copy is damaged on disk
    provider.hosting.deploy(action)
    endpoint = wait_status(provider, action.endpoint_name, "Failed")
    assert "server did not start" in endpoint.failure_reason
    assert provider.hosting.delete(action.endpoint_name)


def test_delete_stops_the_server(models, local_dir):
    provider, action = deploy_first_version(models, local_dir)
    endpoint = wait_status(provider, action.endpoint_name, "InService")
    pid = pid_of(provider, action.endpoint_name)
    assert provider.hosting.delete(action.endpoint_name)
    assert provider.hosting.describe(action.endpoint_name) is None
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    with pytest.raises(OSError):
        predict(endpoint.url, "1,2")


def test_steady_resync_is_short_and_set_by_the_environment(local_dir, monkeypatch):
    # A dead server is noticed at the next observe, so the controller resyncs this often.
    monkeypatch.delenv(RESYNC_ENV, raising=False)
    assert LocalProvider(local_dir).max_resync_seconds == 10
    monkeypatch.setenv(RESYNC_ENV, "2.5")
    spec = parse_spec({"modelPackageGroup": {"name": "g"}})
    assert ProviderFactory(default="local").get(spec).max_resync_seconds == 2.5
    for bad in ("0", "-3", "soon", "inf", "nan"):
        monkeypatch.setenv(RESYNC_ENV, bad)
        with pytest.raises(SpecError, match=RESYNC_ENV):
            LocalProvider(local_dir)


def test_s3_artifacts_without_credentials_stall(local_dir, aws_env, model_artifact, monkeypatch):
    # The same call fails again until someone provides credentials: terminal, as for the
    # sagemaker provider (both classify through providers.errors).
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # none cached from earlier tests
    provider = LocalProvider(local_dir)
    spec = parse_spec({"modelPackageGroup": {"name": "g"}, "model": {"artifact": model_artifact}})
    provider.registry.ensure_group("g", None)
    with pytest.raises(TerminalError, match="credentials"):
        provider.registry.register_version(spec)
    assert provider.state.versions("g") == []
