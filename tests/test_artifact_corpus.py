"""The artifact corpus (tests/artifact_corpus.py): every hostile or broken model.tar.gz gets its
expected verdict, through `compat.inspect_and_check` and through the local provider's
registration, and the inspection's memory and time limits really apply. Prints a table of the
verdicts with the inspecting subprocess's peak memory and the time each case took."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from artifact_corpus import MB, Case, _streamed_member, build

from modeldeploy.artifacts import compat, guard
from modeldeploy.artifacts.limits import MEMORY_ENV, SECONDS_ENV
from modeldeploy.providers.errors import TerminalError
from modeldeploy.providers.local import LocalProvider
from modeldeploy.spec import parse_spec

GROUP = "corpus-xgboost"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    return build(tmp_path_factory.mktemp("corpus"))


def _verdict(case: Case) -> tuple[str, float, int | None]:
    """("accepted" or the refusal message, seconds, peak KiB of the inspecting subprocess)."""
    start = time.perf_counter()
    try:
        compat.inspect_and_check(case.path, case.framework_version, None, f"file://{case.path}")
        outcome = "accepted"
    except ValueError as err:
        outcome = str(err)
    return outcome, time.perf_counter() - start, guard.last_peak_kb


def _mismatch(case: Case, outcome: str) -> str | None:
    if case.refused is None:
        return None if outcome == "accepted" else f"{case.name}: refused: {outcome}"
    if outcome == "accepted":
        return f"{case.name}: accepted, expected a refusal naming {case.refused!r}"
    if case.refused.lower() not in outcome.lower() or "Traceback" in outcome:
        return f"{case.name}: {outcome!r} does not name {case.refused!r}"
    return None


def test_the_corpus_gets_its_verdicts(corpus: list[Case]) -> None:
    assert len(corpus) >= 40
    rows, wrong = [], []
    for case in corpus:
        outcome, seconds, peak = _verdict(case)
        rows.append((case.name, outcome, seconds, peak))
        if problem := _mismatch(case, outcome):
            wrong.append(problem)
    print(f"\n{'case':44} {'verdict':9} {'peak MiB':>8} {'seconds':>7}  message")
    for name, outcome, seconds, peak in rows:
        verdict = "accepted" if outcome == "accepted" else "refused"
        mib = f"{peak / 1024:.0f}" if peak else "-"
        message = "" if outcome == "accepted" else outcome.split(": ", 1)[-1][:90]
        print(f"{name[:44]:44} {verdict:9} {mib:>8} {seconds:7.2f}  {message}")
    refused = sum(1 for r in rows if r[1] != "accepted")
    worst = max(rows, key=lambda r: r[3] or 0)
    slowest = max(rows, key=lambda r: r[2])
    print(
        f"{len(rows)} cases, {refused} refused; peak {worst[3] / 1024:.0f} MiB ({worst[0]}), "
        f"slowest {slowest[2]:.2f} s ({slowest[0]})"
    )
    assert not wrong, "\n".join(wrong)


def test_the_local_provider_refuses_each_bad_artifact_once_as_terminal(
    corpus: list[Case], tmp_path: Path
) -> None:
    provider = LocalProvider(tmp_path / "state")
    provider.registry.ensure_group(GROUP, None)
    wrong = []
    for case in corpus:
        uri = f"file://{case.path}"
        model = {"artifact": uri}
        if case.framework_version:
            model["frameworkVersion"] = case.framework_version
        spec = parse_spec(
            {"modelPackageGroup": {"name": GROUP}, "provider": "local", "model": model}
        )
        try:
            provider.registry.register_version(spec)
            outcome = "accepted"
        except TerminalError as err:
            outcome = str(err)
            # The URI names the input, then comes the cause.
            if not outcome.startswith(f"{uri}: "):
                wrong.append(f"{case.name}: {outcome!r} does not start with the artifact")
        if problem := _mismatch(case, outcome):
            wrong.append(problem)
    assert not wrong, "\n".join(wrong)


def test_a_directory_artifact_says_it_is_a_directory(tmp_path: Path) -> None:
    provider = LocalProvider(tmp_path / "state")
    provider.registry.ensure_group(GROUP, None)
    spec = parse_spec(
        {
            "modelPackageGroup": {"name": GROUP},
            "provider": "local",
            "model": {"artifact": f"file://{tmp_path}"},
        }
    )
    with pytest.raises(TerminalError, match="is a directory"):
        provider.registry.register_version(spec)


@pytest.fixture(scope="module")
def whitespace_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 MiB of JSON whitespace before a tiny document: within the size cap, and costlier to
    parse than the default memory limit allows. Under 1 MB of gzip."""
    path = tmp_path_factory.mktemp("bomb") / "model.tar.gz"
    path.write_bytes(_streamed_member(500 * MB, b"", b" ", b"{}"))
    return path


def test_the_memory_limit_applies(whitespace_bomb: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(guard.ArtifactLimitError, match=f"1024 MiB .*{MEMORY_ENV}"):
        compat.inspect_and_check(whitespace_bomb, None, None)
    assert time.perf_counter() - start < 120  # a generous guard, not a benchmark


def test_the_time_limit_applies(whitespace_bomb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MEMORY_ENV, "4096")
    monkeypatch.setenv(SECONDS_ENV, "1")
    start = time.perf_counter()
    with pytest.raises(guard.ArtifactLimitError, match=f"1 s .*{SECONDS_ENV}"):
        compat.inspect_and_check(whitespace_bomb, None, None)
    assert time.perf_counter() - start < 30
