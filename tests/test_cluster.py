"""The local control plane: real etcd + kube-apiserver built from the pins, driven by kubectl."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from cryptography import x509
from kube import kubectl

from modeldeploy.cluster import ClusterPKI, ControlPlane, binaries, cluster_command
from modeldeploy.cluster.controlplane import process_alive
from modeldeploy.cluster.pki import cert_subject

# The session fixtures `control_plane` and `kubeconfig`.
pytest_plugins = ["kube"]

GO_MOD = Path(__file__).resolve().parents[1] / "hack" / "controlplane" / "go.mod"


def pinned(module: str) -> str:
    """The version hack/controlplane/go.mod pins for `module`."""
    m = re.search(rf"^\s*{re.escape(module)} (v\S+)", GO_MOD.read_text(), re.MULTILINE)
    assert m, f"{module} not in {GO_MOD}"
    return m.group(1)


def test_pki_client_certs_carry_user_and_groups(tmp_path: Path) -> None:
    pki = ClusterPKI(tmp_path).ensure()
    ca = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    pair = pki.mint_user("deployer", ["team-a", "team-b"])
    for path in (pki.serving.cert, pki.admin.cert, pair.cert):
        x509.load_pem_x509_certificate(path.read_bytes()).verify_directly_issued_by(ca)
    assert cert_subject(pki.admin.cert) == ("admin", ["system:masters"])
    assert cert_subject(pair.cert) == ("deployer", ["team-a", "team-b"])
    assert pki.ca.key.stat().st_mode & 0o077 == 0
    # ensure() keeps what exists: kubeconfigs written earlier stay valid.
    before = pki.admin.cert.read_bytes()
    assert ClusterPKI(tmp_path).ensure().admin.cert.read_bytes() == before


def test_checkout_builds_with_its_own_script(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the checkout (editable install) no variable is needed."""
    monkeypatch.delenv(binaries.SOURCE_DIR_ENV, raising=False)
    assert binaries.build_script() == GO_MOD.parents[1] / "build-controlplane.sh"


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This module as a wheel installs it: in site-packages, no checkout around it."""
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    monkeypatch.delenv(binaries.SOURCE_DIR_ENV, raising=False)
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    monkeypatch.setattr(binaries, "_HERE", site / "modeldeploy" / "cluster" / "binaries.py")
    return site


def test_installed_package_without_source_tree_says_what_it_needs(
    installed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert cluster_command("up", tmp_path / "state") == 1
    err = capsys.readouterr().err
    assert "has no source tree" in err and str(installed / "modeldeploy") in err
    assert "MODELDEPLOY_CONTROLPLANE_BIN_DIR" in err and "MODELDEPLOY_SOURCE_DIR" in err
    assert "hack/build-controlplane.sh" in err
    assert not (tmp_path / "state").exists()  # refused before writing certificates

    not_a_checkout = tmp_path / "elsewhere"
    not_a_checkout.mkdir()
    monkeypatch.setenv(binaries.SOURCE_DIR_ENV, str(not_a_checkout))
    with pytest.raises(binaries.BinariesError, match=r"MODELDEPLOY_SOURCE_DIR=.*elsewhere has no"):
        binaries.ensure_binaries()


def test_installed_package_builds_through_the_source_dir(
    installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODELDEPLOY_SOURCE_DIR's script is run, and its printed directory is used."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("kube-apiserver", "etcd", "kubectl"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "checkout" / "hack" / "build-controlplane.sh"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!/bin/sh\necho building >&2\necho {bin_dir}\n")
    script.chmod(0o755)
    monkeypatch.setenv(binaries.SOURCE_DIR_ENV, str(tmp_path / "checkout"))
    assert binaries.ensure_binaries().kubectl == bin_dir / "kubectl"


def test_kubectl_version_reports_the_pinned_release(kubeconfig: Path) -> None:
    out = json.loads(kubectl(kubeconfig, "version", "-o", "json").stdout)
    server = out["serverVersion"]
    want = pinned("k8s.io/kubernetes")
    assert server["gitVersion"] == want
    assert (server["major"], server["minor"]) == ("1", want.split(".")[1])


def test_readyz_through_the_kubeconfig(kubeconfig: Path) -> None:
    assert kubectl(kubeconfig, "get", "--raw", "/readyz").stdout.strip() == "ok"
    verbose = kubectl(kubeconfig, "get", "--raw", "/readyz?verbose").stdout
    assert "[+]etcd ok" in verbose
    assert "[+]poststarthook/rbac/bootstrap-roles ok" in verbose


def test_status_reports_both_components(control_plane: ControlPlane) -> None:
    st = control_plane.status()
    assert st["running"] and st["ready"]
    assert st["apiserver"]["version"] == pinned("k8s.io/kubernetes")
    assert "v" + st["etcd"]["version"] == pinned("go.etcd.io/etcd/server/v3")
    assert st["apiserver"]["url"].startswith("https://127.0.0.1:")


def test_second_up_reuses_the_running_processes(control_plane: ControlPlane) -> None:
    before = control_plane.status()
    started = time.monotonic()
    assert control_plane.up() == control_plane.kubeconfig_path
    assert time.monotonic() - started < 10  # reused, not restarted
    after = control_plane.status()
    for name in ("etcd", "apiserver"):
        assert after[name]["pid"] == before[name]["pid"]
        assert after[name]["url"] == before[name]["url"]


def test_rbac_applies_to_a_client_certificate_user(
    control_plane: ControlPlane, kubeconfig: Path
) -> None:
    user = control_plane.user_kubeconfig("reader-test", ["readers-test"])
    denied = kubectl(user, "get", "pods", "-n", "default", check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr
    assert 'User "reader-test" cannot list resource "pods"' in denied.stderr

    # Bind a ClusterRole to the certificate's group (O=readers-test): reading pods is allowed,
    # reading Secrets still is not.
    kubectl(
        kubeconfig, "create", "clusterrole", "pod-reader-test", "--verb=get,list", "--resource=pods"
    )
    kubectl(
        kubeconfig,
        "create",
        "clusterrolebinding",
        "pod-reader-test",
        "--clusterrole=pod-reader-test",
        "--group=readers-test",
    )
    assert kubectl(user, "get", "pods", "-n", "default").returncode == 0
    assert kubectl(user, "auth", "can-i", "list", "pods").stdout.strip() == "yes"
    secrets = kubectl(user, "auth", "can-i", "get", "secrets", check=False)
    assert secrets.stdout.strip() == "no"


def test_cluster_command_status_and_kubeconfig(
    control_plane: ControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cluster_command("status", control_plane.state_dir) == 0
    out = capsys.readouterr().out
    assert "apiserver: " + pinned("k8s.io/kubernetes") + " running, ready" in out
    assert cluster_command("kubeconfig", control_plane.state_dir) == 0
    assert capsys.readouterr().out.strip() == str(control_plane.kubeconfig_path)
    assert cluster_command("restart", control_plane.state_dir) == 2


def test_down_stops_everything_and_up_resumes_the_same_cluster(tmp_path: Path) -> None:
    # Its own control plane: stopping the session's would break the other tests.
    cp = ControlPlane(tmp_path / "cp", detach=False)
    try:
        kc = cp.up()
        kubectl(kc, "create", "configmap", "survives-restart", "--from-literal=k=v")
        pids = [cp.status()[n]["pid"] for n in ("etcd", "apiserver")]
        assert cp.down() is True
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists(), f"process {pid} left behind"
            assert not process_alive(pid)
        st = cp.status()
        assert not st["running"] and st["etcd"] is None and st["apiserver"] is None
        assert cluster_command("status", cp.state_dir) == 1
        assert cp.down() is False  # idempotent

        # Certificates and etcd data persist: the same kubeconfig sees the same objects.
        kc = cp.up()
        out = kubectl(kc, "get", "configmap", "survives-restart", "-o", "jsonpath={.data.k}")
        assert out.stdout == "v"
    finally:
        cp.down(purge=True)
    assert not (tmp_path / "cp").exists()
