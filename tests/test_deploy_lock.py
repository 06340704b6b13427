"""The image's lock file (requirements/runtime.txt, hack/lock-runtime.sh) against pyproject.toml."""

from __future__ import annotations

import tomllib

from deploy_artifacts import (
    ROOT,
)


def test_runtime_lock_pins_every_runtime_dependency() -> None:
    """requirements/runtime.txt (hack/lock-runtime.sh) pins each dependency of pyproject.toml
    exactly, within the range pyproject allows, so image builds are repeatable."""
    from packaging.requirements import Requirement

    lock = {}
    for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            lock[name.lower().replace("_", "-")] = version
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for spec in declared:
        req = Requirement(spec)
        name = req.name.lower().replace("_", "-")
        assert name in lock, f"{name} is missing from requirements/runtime.txt: run the script"
        assert req.specifier.contains(lock[name]), f"{name}=={lock[name]} is outside {spec}"
