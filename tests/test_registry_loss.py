"""A lost local registry strands nothing and duplicates nothing (issue 11): the pass stalls with
a reason a person can act on, `modeldeploy local reset` stops the orphaned servers and starts a
new history, and an endpoint never runs a second server beside an untracked one. Real
`modeldeploy serve` processes with a real trained model; each one is stopped by its pid."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from driver import Resource
from providers import deploy_request

from modeldeploy import handlers, naming, processes
from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.local import LocalProvider
from modeldeploy.providers.local.history import RegistryLost
from modeldeploy.providers.local.servers import Server, server_at, servers_of, stop_server
from modeldeploy.remote import DeployRequest
from modeldeploy.spec import parse_spec
from modeldeploy.training.train import train

GROUP = "breast-cancer"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return train(tmp_path_factory.mktemp("model") / "a", progress=False)


@pytest.fixture
def stop_servers(local_dir):
    """Whatever a test leaves running in its directory is stopped by pid, tracked or not."""
    yield
    for server in servers_of(local_dir):
        assert stop_server(server, local_dir)


def reset(local_dir: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """The real `modeldeploy local reset`, as a person runs it."""
    command = [sys.executable, "-m", "modeldeploy", "local", "reset", "--dir", str(local_dir)]
    return subprocess.run([*command, *flags], capture_output=True, text=True, timeout=60)


def resource(model, local_dir: Path) -> Resource:
    first_row = Path(model.heldout).read_text().splitlines()[0].split(",", 1)[1]
    spec = {
        "provider": "local",
        "modelPackageGroup": {"name": GROUP},
        "model": {"artifact": f"file://{model.model_tar}", "metrics": model.metrics},
        "approval": {"approvedVersion": 1},
        "staging": {"smokeTest": {"payload": first_row, "maxLatencyMs": 5000}},
    }
    return Resource(spec, providers=ProviderFactory(default="local"), name="bc", namespace="demo")


def staging_pid(local_dir: Path) -> int:
    provider = LocalProvider(local_dir)
    return provider.state.endpoint(naming.endpoint_name("demo", "bc", "staging")).pid


def test_a_deleted_registry_stalls_until_reset_then_a_new_history_starts(
    model, local_dir, stop_servers
):
    res = resource(model, local_dir)
    res.settle("AwaitingPromotion")
    pid = staging_pid(local_dir)
    marker = json.loads((local_dir / "registry.id").read_text())
    for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
        (local_dir / name).unlink(missing_ok=True)

    db = local_dir / "registry.db"
    expected = (
        f"cannot read remote state: the local registry {db} is gone but {local_dir} held one "
        f"(id {marker['id']}, created {marker['created']}; 1 endpoint server of it still runs: "
        f"pid {pid}): restore {db} from a backup, or run `modeldeploy local reset --dir "
        f"{local_dir}` to stop its servers and start a new history (version numbers start "
        "again at 1)"
    )
    for restarted in (False, True):  # the running operator, then one started after the loss
        if restarted:
            res.memo.providers = ProviderFactory(default="local")
        res.call(handlers.on_change)
        assert res.status["phase"] == "Failed"
        assert res.condition("Stalled") == ("True", "RemoteError")
        assert res.status["message"] == expected
        assert not db.exists()  # nothing registered, no fresh history
        assert [s.pid for s in servers_of(local_dir)] == [pid]  # no second server

    done = reset(local_dir)
    assert (done.returncode, done.stderr) == (0, "")
    assert f"stopped endpoint server {pid} (" in done.stdout
    assert "new history" in done.stdout
    assert not processes.alive(pid)

    res.settle("AwaitingPromotion")
    provider = LocalProvider(local_dir)
    assert [v.version for v in provider.state.versions(GROUP)] == [1]
    assert [s.pid for s in servers_of(local_dir)] == [staging_pid(local_dir)]
    assert staging_pid(local_dir) != pid
    assert json.loads((local_dir / "registry.id").read_text())["in_use"] is True


def registered(model, local_dir: Path) -> LocalProvider:
    provider = LocalProvider(local_dir)
    spec = parse_spec(
        {"modelPackageGroup": {"name": GROUP}, "model": {"artifact": f"file://{model.model_tar}"}}
    )
    provider.registry.ensure_group(GROUP, None)
    provider.registry.register_version(spec)
    return provider


def test_a_dropped_table_is_a_lost_registry_not_a_sqlite_error(model, local_dir):
    provider = registered(model, local_dir)
    with sqlite3.connect(local_dir / "registry.db") as db:
        db.execute("DROP TABLE versions")
    for state in (provider.state, LocalProvider(local_dir).state):  # running, and restarted
        with pytest.raises(RegistryLost) as lost:
            state.versions(GROUP)
        message = str(lost.value)
        assert message.startswith(
            f"the local registry {local_dir / 'registry.db'} has lost its table versions (id "
        )
        assert "no endpoint server of it runs" in message
        assert f"`modeldeploy local reset --dir {local_dir}` to start a new history" in message
        assert not isinstance(lost.value.__cause__, RegistryLost)


def test_traces_without_a_marker_are_a_lost_registry(model, local_dir):
    registered(model, local_dir)
    (local_dir / "registry.db").unlink()
    (local_dir / "registry.id").unlink()  # as a release before the marker left the directory
    with pytest.raises(RegistryLost) as lost:
        LocalProvider(local_dir).state.group_arn(GROUP)
    db = local_dir / "registry.db"
    assert str(lost.value) == (
        f"the local registry {db} is gone but {local_dir} held one (no registry.id beside it, "
        "but it still holds 1 stored artifact; no endpoint server of it runs): restore "
        f"{db} from a backup, or run `modeldeploy local reset --dir {local_dir}` to start a "
        "new history (version numbers start again at 1)"
    )
    assert not (local_dir / "registry.db").exists()


def test_a_fresh_dir_creates_its_registry_and_marker(local_dir):
    provider = LocalProvider(local_dir)
    assert provider.state.group_arn(GROUP) is None
    assert provider.registry.ensure_group(GROUP, None)
    marker = json.loads((local_dir / "registry.id").read_text())
    assert re.fullmatch(r"[0-9a-f]{12}", marker["id"]) and marker["in_use"] is True
    assert (local_dir / "registry.id").stat().st_mode & 0o777 == 0o600
    assert (local_dir / "registry.db").stat().st_mode & 0o777 == 0o600
    again = LocalProvider(local_dir)  # a restart reads the same history
    assert again.state.group_arn(GROUP) == provider.state.group_arn(GROUP)
    assert json.loads((local_dir / "registry.id").read_text()) == marker
    # A registry older than the marker is adopted, not taken for a lost one.
    (local_dir / "registry.id").unlink()
    assert LocalProvider(local_dir).state.group_arn(GROUP)
    assert json.loads((local_dir / "registry.id").read_text())["in_use"] is True


def test_reset_refuses_an_intact_registry_unless_forced(model, local_dir):
    registered(model, local_dir)
    before = LocalProvider(local_dir).state.dump()
    refused = reset(local_dir)
    assert refused.returncode != 0
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"modeldeploy local: the local registry {local_dir / 'registry.db'} is intact "
        "(groups: 1, versions: 1, endpoints: 0): nothing to reset; --force starts a new history"
        " anyway (it stops every endpoint server of the directory and sets the registry aside)"
    ]
    assert LocalProvider(local_dir).state.dump() == before

    forced = reset(local_dir, "--force")
    assert forced.returncode == 0, forced.stderr
    (aside,) = local_dir.glob("registry-before-reset-*.db")
    assert str(aside) in forced.stdout
    assert LocalProvider(local_dir).state.versions(GROUP) == []  # a new history


def deploy(model, local_dir: Path) -> tuple[LocalProvider, DeployRequest]:
    provider = registered(model, local_dir)
    (version,) = provider.state.versions(GROUP)
    request = deploy_request(version, naming.endpoint_name("ns", "x", "staging"), config_name="c")
    provider.hosting.deploy(request)
    return provider, request


def test_an_untracked_server_is_stopped_before_a_new_one_starts(
    model, local_dir, stop_servers, caplog
):
    provider, request = deploy(model, local_dir)
    name = request.endpoint_name
    old = provider.state.endpoint(name).pid
    assert [(s.pid, s.endpoint) for s in servers_of(local_dir)] == [(old, name)]
    provider.state.delete_endpoint(name)  # a lost row: the server keeps running, untracked
    with caplog.at_level(logging.WARNING):
        provider.hosting.deploy(request)
    new = provider.state.endpoint(name).pid
    assert f"endpoint {name}: stopping server {old}, which the local registry does not track" in (
        caplog.text
    )
    assert not processes.alive(old)
    assert [s.pid for s in servers_of(local_dir)] == [new] and new != old


def test_a_reused_pid_is_never_signalled(local_dir):
    other = subprocess.Popen(["sleep", "60"])
    try:
        impostor = Server(other.pid, str(local_dir / "artifacts" / "x" / "model.tar.gz"), "ep")
        assert server_at(other.pid, local_dir) is None
        assert stop_server(impostor, local_dir)  # that server is gone: nothing to stop
        assert other.poll() is None  # and the program now under its pid was not touched
    finally:
        os.kill(other.pid, 15)
        other.wait()
