"""The Dockerfile: multi-stage, pinned, non-root, runtime dependencies only, and a build context
holding every package directory.
"""

from __future__ import annotations

import re
import tomllib

from deploy_artifacts import (
    ROOT,
    dockerfile_stages,
    dockerfile_uid,
)


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "single-stage build"
    for stage in stages:
        image = stage[0][1].split()[0]
        if image in {s[0][1].split()[-1] for s in stages if " AS " in s[0][1].upper()}:
            continue  # FROM an earlier stage
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and "latest" not in tag, f"unpinned base image {image}"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim-\w+", tag), f"base tag {tag} is not exact slim"
    assert dockerfile_uid() != 0
    final = stages[-1]
    entrypoint = [rest for kw, rest in final if kw == "ENTRYPOINT"]
    assert entrypoint == ['["modeldeploy", "run"]']
    # The final stage copies the built virtualenv and builds nothing itself: no compilers.
    assert not [rest for kw, rest in final if kw == "RUN"]
    copies = [rest for kw, rest in final if kw == "COPY"]
    assert copies and all(c.startswith("--from=") for c in copies)


def test_dockerfile_installs_runtime_dependencies_only() -> None:
    runs = [rest for stage in dockerfile_stages() for kw, rest in stage if kw == "RUN"]
    pip = [
        cmd for run_ in runs for cmd in run_.split("&&") if re.search(r"\bpip (install|wheel)", cmd)
    ]
    assert pip, "no pip step"
    for cmd in pip:
        assert "[dev]" not in cmd and " -e " not in cmd, f"dev install: {cmd}"
        if "uninstall" not in cmd:
            assert "--no-cache-dir" in cmd, f"pip step keeps its cache: {cmd}"
    assert not any(re.search(r"\b(gcc|g\+\+|build-essential)\b", r) for r in runs)
    installs = [cmd for cmd in pip if "pip install" in cmd]
    assert all("--constraint requirements/runtime.txt" in cmd for cmd in installs), installs


def test_docker_build_context_holds_every_package_dir() -> None:
    """The build context (.dockerignore) and the COPY lines cover every package directory in
    pyproject.toml, so the wheel built in the image is the whole operator."""
    copied = [
        rest.split()[0].rstrip("/")
        for kw, rest in dockerfile_stages()[0]
        if kw == "COPY" and not rest.startswith("--from")
    ]
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for src in copied:
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f"{src} is not in the build context"
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    for package, directory in package_dirs.items():
        assert any(directory == c or directory.startswith(c + "/") for c in copied), package
    assert "pyproject.toml" in copied
