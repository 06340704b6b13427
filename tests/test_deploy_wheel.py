"""The wheel (and so the image) holds every package of the operator."""

from __future__ import annotations

import tomllib

from deploy_artifacts import (
    ROOT,
)


def test_wheel_lists_every_package() -> None:
    """pyproject.toml lists its packages explicitly: one left out is missing from the wheel, and
    so from the image, while tests that import from the checkout still pass."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, directory in setuptools["package-dir"].items():
        for init in (ROOT / directory).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / directory).parts
            found.add(".".join((package, *rel)))
    missing = sorted(found - set(setuptools["packages"]))
    assert not missing, f"packages missing from pyproject.toml's list: {missing}"
