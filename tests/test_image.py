"""The operator image, built by `make image` (hack/build-image.sh), checked by running it with
podman: non-root, a read-only root filesystem, `modeldeploy --version`, `modeldeploy run` up to
a healthy liveness probe against a real kube-apiserver, and nothing it should not carry (a
compiler, a pip cache, the source tree, pip in its virtualenv).

`make test` builds the image first when it runs as root (`make image-if-root`), so the build
here is a no-op; without root every test skips and says why. `make image-test` runs only this
module. Every container is started under a name of its own and removed by it.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_process import free_port

pytestmark = pytest.mark.image
pytest_plugins = ["kube"]

ROOT = Path(__file__).resolve().parents[1]
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000")
# What a compiler toolchain or a build leaves behind; none of it belongs in the image.
COMPILERS = ("usr/bin/gcc", "usr/bin/cc", "usr/bin/g++", "usr/bin/c++", "usr/bin/make")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def image() -> str:
    """The tag of the image `make image` built (the build is a no-op when it is current)."""
    if os.geteuid() != 0:
        pytest.skip("the image is built and run with rootful podman: run the tests as root")
    proc = subprocess.run(
        [str(ROOT / "hack" / "build-image.sh")], capture_output=True, text=True, timeout=3600
    )
    assert proc.returncode == 0, proc.stderr
    print(proc.stderr)  # the build's figures: size, times
    return f"localhost/modeldeploy:{_version()}"


def _version() -> str:
    from modeldeploy import __version__

    return __version__


def run_in(image: str, *args: str, entrypoint: str | None = None, timeout: float = 120):
    """`podman run` as the cluster runs it: the image's user, a read-only root, /tmp writable."""
    name = f"md-test-{secrets.token_hex(4)}"
    cmd = [*PODMAN, "run", "--rm", "--name", name, *ULIMITS, "--read-only", "--tmpfs", "/tmp"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    try:
        return subprocess.run([*cmd, image, *args], capture_output=True, text=True, timeout=timeout)
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-i", name], capture_output=True)


def test_version_runs_as_a_non_root_user_on_a_read_only_root(image: str) -> None:
    proc = run_in(image, "--version", entrypoint="modeldeploy")
    assert proc.returncode == 0, proc.stderr
    assert _version() in proc.stdout
    ids = run_in(image, "-c", "id -u; id -g; touch /opt/x 2>&1 || true", entrypoint="sh")
    uid, gid, touch = ids.stdout.splitlines()[:3]
    assert (uid, gid) == ("65532", "65532")
    assert "Read-only file system" in touch


@pytest.fixture
def image_files(image: str) -> Iterator[list[str]]:
    """Every path of the image's filesystem, as `podman export` of a stopped container gives."""
    name = f"md-files-{secrets.token_hex(4)}"
    subprocess.run([*PODMAN, "create", "--name", name, image], check=True, capture_output=True)
    try:
        data = subprocess.run(
            [*PODMAN, "export", name], check=True, capture_output=True, timeout=300
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            yield [m.name.lstrip("./") for m in tar.getmembers()]
    finally:
        subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True)


def test_the_image_carries_no_compiler_pip_cache_or_source_tree(image_files: list[str]) -> None:
    files = set(image_files)
    assert not [c for c in COMPILERS if c in files]
    assert not [f for f in files if "/.cache/pip" in f or f.startswith("root/.cache")]
    # The builder's source tree and wheels, the repository's own directories.
    assert not [f for f in files if f.startswith(("src/", "wheels/", "operator/", "training/"))]
    venv = "opt/modeldeploy/lib/python3.11/site-packages/"
    assert f"{venv}modeldeploy/reconcile/planner.py" in files  # the installed package
    assert not [f for f in files if f.startswith(f"{venv}pip/")]  # uninstalled after use


def test_modeldeploy_run_becomes_healthy_against_a_real_api_server(
    image: str, kubeconfig: Path, crd: None, tmp_path: Path
) -> None:
    """The image's own entrypoint and command, a kubeconfig mounted read-only, host network
    (the API server listens on loopback); healthy = kopf's liveness endpoint answers 200."""
    health, metrics = free_port(), free_port()
    name = f"md-run-{secrets.token_hex(4)}"
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig.read_text())
    config.chmod(0o644)  # read by uid 65532 in the container
    cmd = [
        *PODMAN, "run", "-d", "--name", name, *ULIMITS, "--read-only", "--tmpfs", "/tmp",
        "--network", "host", "-v", f"{config}:/etc/modeldeploy/kubeconfig:ro",
        "-e", "KUBECONFIG=/etc/modeldeploy/kubeconfig", "-e", f"MODELDEPLOY_METRICS_PORT={metrics}",
        image, f"--liveness=http://127.0.0.1:{health}/healthz",
    ]  # fmt: skip
    started = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    try:
        ready = None
        while time.monotonic() - started < 120 and ready is None:
            try:
                with _OPENER.open(f"http://127.0.0.1:{health}/healthz", timeout=2) as answer:
                    ready = time.monotonic() - started if answer.status == 200 else None
            except OSError:
                time.sleep(0.2)
        logs = subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True).stdout
        assert ready is not None, f"not healthy after 120 s:\n{logs[-3000:]}"
        inspect = subprocess.run([*PODMAN, "inspect", name], capture_output=True, text=True)
        state = json.loads(inspect.stdout)[0]["State"]
        assert state["Running"], logs[-3000:]
        with _OPENER.open(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as answer:
            assert b"modeldeploy_" in answer.read()
        print(f"container start to healthy: {ready:.1f} s")
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "5", name], capture_output=True)
