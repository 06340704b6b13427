"""The lock files (requirements/runtime.txt and dev.txt, hack/lock.sh) against pyproject.toml."""

from __future__ import annotations

import tomllib

import pytest
from deploy_artifacts import ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def read_lock(name: str) -> dict[str, str]:
    lock = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        if line and not line.startswith("#"):
            package, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            lock[canonicalize_name(package)] = version
    return lock


def assert_pins(lock_name: str, declared: list[str]) -> None:
    lock = read_lock(lock_name)
    for spec in declared:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{name} is missing from requirements/{lock_name}: run hack/lock.sh"
        assert req.specifier.contains(lock[name]), f"{name}=={lock[name]} is outside {spec}"


def test_runtime_lock_pins_every_runtime_dependency() -> None:
    """The image's lock pins each runtime dependency exactly, within pyproject's range."""
    assert_pins("runtime.txt", PROJECT["dependencies"])


@pytest.mark.parametrize("extra", ["dev", "report"])
def test_dev_lock_pins_every_dependency_of_make_install(extra: str) -> None:
    """`make install` resolves nothing itself: the dev lock pins the runtime dependencies and
    each extra, so a new upstream release cannot change (or stall) a fresh install."""
    assert_pins("dev.txt", PROJECT["dependencies"] + PROJECT["optional-dependencies"][extra])


def test_dev_lock_runs_the_image_versions() -> None:
    """Tests run what the image ships: every package of the runtime lock at the same version."""
    runtime, dev = read_lock("runtime.txt"), read_lock("dev.txt")
    assert {n: dev.get(n) for n in runtime} == runtime
