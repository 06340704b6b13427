"""Decisions as commits: `modeldeploy approve|reject|promote|rollback -f FILE` rewrites only the
decision's field of real manifests; every other line stays byte for byte, comments included."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modeldeploy import cli
from modeldeploy.gitops.decisions import Decision, DecisionError
from modeldeploy.gitops.manifest import ManifestError, rewrite_file, rewrite_text
from modeldeploy.spec import parse_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"
NAMES = {
    "manual": "breast-cancer-manual",
    "automatic": "breast-cancer-automatic",
    "local": "breast-cancer-local",
}


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added), line endings included; asserts that every other line is
    kept byte for byte and in order."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    removed, added = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            assert old[i1:i2] == new[j1:j2]
            continue
        removed += old[i1:i2]
        added += new[j1:j2]
    kept_old = [line for line in old if line not in removed]
    kept_new = [line for line in new if line not in added]
    assert kept_old == kept_new
    return removed, added


def copy_example(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_bytes((EXAMPLES / f"{name}.yaml").read_bytes())
    return path


# -- the repository's examples, one decision at a time ---------------------------------------


@pytest.mark.parametrize(
    ("example", "verb", "version", "reason", "added"),
    [
        # The commented-out hint stays; the field goes right after it.
        ("manual", "approve", 3, None, ["    approvedVersion: 3\n"]),
        ("manual", "promote", 2, None, ["    promotedVersion: 2\n"]),
        ("manual", "rollback", 1, None, ["    promotedVersion: 1\n"]),
        (
            "manual",
            "reject",
            4,
            "AUC 0.81 on the new holdout: below the bar",
            [
                "    rejectedVersions:\n",
                "      - version: 4\n",
                '        reason: "AUC 0.81 on the new holdout: below the bar"\n',
            ],
        ),
        # The automatic example's list style (dash two columns in) is the one new lists take.
        (
            "automatic",
            "reject",
            2,
            "leaks the label",
            [
                "    rejectedVersions:\n",
                "      - version: 2\n",
                "        reason: leaks the label\n",
            ],
        ),
        ("automatic", "promote", 2, None, ["    promotedVersion: 2\n"]),
        ("local", "approve", 1, None, ["    approvedVersion: 1\n"]),
    ],
)
def test_example_gains_only_the_field(tmp_path, example, verb, version, reason, added):
    path = copy_example(tmp_path, example)
    before = path.read_text()
    rewrite = rewrite_file(path, Decision(verb, NAMES[example], version, reason))
    after = path.read_text()
    assert rewrite.changed and rewrite.after == after
    removed, got = changed_lines(before, after)
    assert removed == [] and got == added
    doc = yaml.safe_load(after)
    parse_spec(doc["spec"])  # still a valid spec
    assert f"+{added[0]}" in rewrite.diff()


def test_manual_example_through_a_review_cycle(tmp_path):
    """Approve, reject others, change one's reason, approve a rejected one, promote, roll
    back: after each step only the lines of that step differ from the step before."""
    path = copy_example(tmp_path, "manual")
    name = NAMES["manual"]
    steps = [
        (Decision("approve", name, 1), [], ["    approvedVersion: 1\n"]),
        (
            Decision("reject", name, 2, "overfits"),
            [],
            ["    rejectedVersions:\n", "      - version: 2\n", "        reason: overfits\n"],
        ),
        (
            Decision("reject", name, 3, 'drift: "age" # moved'),
            [],
            ["      - version: 3\n", '        reason: "drift: \\"age\\" # moved"\n'],
        ),
        (
            Decision("reject", name, 2, "overfits on the 2024 rows"),
            ["        reason: overfits\n"],
            ["        reason: overfits on the 2024 rows\n"],
        ),
        (
            Decision("approve", name, 2),
            [
                "    approvedVersion: 1\n",
                "      - version: 2\n",
                "        reason: overfits on the 2024 rows\n",
            ],
            ["    approvedVersion: 2\n"],
        ),
        (Decision("promote", name, 2), [], ["    promotedVersion: 2\n"]),
        (Decision("rollback", name, 1), ["    promotedVersion: 2\n"], ["    promotedVersion: 1\n"]),
        # The last rejection goes with its list.
        (
            Decision("approve", name, 3),
            [
                "    approvedVersion: 2\n",
                "    rejectedVersions:\n",
                "      - version: 3\n",
                '        reason: "drift: \\"age\\" # moved"\n',
            ],
            ["    approvedVersion: 3\n"],
        ),
    ]
    for decision, removed, added in steps:
        before = path.read_text()
        rewrite_file(path, decision)
        after = path.read_text()
        assert changed_lines(before, after) == (removed, added), decision
        parse_spec(yaml.safe_load(after)["spec"])
    approval = yaml.safe_load(path.read_text())["spec"]["approval"]
    assert approval == {"policy": "Manual", "approvedVersion": 3}


def test_a_decision_already_recorded_changes_nothing(tmp_path):
    path = copy_example(tmp_path, "manual")
    rewrite_file(path, Decision("approve", NAMES["manual"], 3))
    before = path.read_bytes()
    again = rewrite_file(path, Decision("approve", NAMES["manual"], 3))
    assert not again.changed and again.diff() == ""
    assert path.read_bytes() == before


def test_reject_refuses_the_approved_version_and_says_what_to_do(tmp_path):
    path = copy_example(tmp_path, "manual")
    rewrite_file(path, Decision("approve", NAMES["manual"], 3))
    before = path.read_bytes()
    with pytest.raises(DecisionError, match=r"approve another version first .*then reject"):
        rewrite_file(path, Decision("reject", NAMES["manual"], 3, "bad"))
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "reason",
    [
        "plain words",
        "yes",  # a YAML 1.1 boolean unquoted
        "3",
        "null",
        "key: value",
        "a # not a comment",
        "  leading spaces",
        "{braces} and [brackets], commas",
        "quotes \" and ' inside",
        "unicode: AUC fell 0.95 → 0.81 ✗",
        "two\nlines",
        "tab\there",
    ],
)
def test_any_reason_reads_back_as_written(reason):
    text = (EXAMPLES / "manual.yaml").read_text()
    flow = "kind: ModelDeployment\nmetadata: {name: f}\nspec: {approval: {policy: Manual}}\n"
    for source, name in ((text, NAMES["manual"]), (flow, "f")):
        new, _, _ = rewrite_text(source, Decision("reject", name, 7, reason))
        assert yaml.safe_load(new)["spec"]["approval"]["rejectedVersions"] == [
            {"version": 7, "reason": reason}
        ]


# -- several documents in one file -----------------------------------------------------------


MULTI_TAIL = """\
---
# The same resource for a second team, in its own namespace.
apiVersion: mlops.modeldeploy.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: breast-cancer-manual
  namespace: team-b   # keep in step with the team's Namespace
spec:
  modelPackageGroup: {name: 'team-b-group', description: "Team B's"}
  approval: {policy: Manual, rejectedVersions: [{version: 1, reason: "too slow"}]}
  production:
      promotion: Manual   # four-space indent on purpose
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: breast-cancer-manual   # same name, another kind
data:
  note: |
    approvedVersion: 99
"""


def multi_file(tmp_path: Path) -> Path:
    parts = [(EXAMPLES / f"{n}.yaml").read_text() for n in ("automatic", "manual", "local")]
    # The first document has no namespace; the manual one is placed in team-a.
    parts[1] = parts[1].replace(
        "  name: breast-cancer-manual\n", "  name: breast-cancer-manual\n  namespace: team-a\n"
    )
    path = tmp_path / "all.yaml"
    path.write_text("---\n".join(parts) + MULTI_TAIL)
    return path


def test_multi_document_file_changes_only_the_named_document(tmp_path):
    path = multi_file(tmp_path)
    before = path.read_text()
    docs_before = list(yaml.safe_load_all(before))
    rewrite = rewrite_file(path, Decision("promote", "breast-cancer-manual", 4), "team-b")
    after = path.read_text()
    assert rewrite.document == 3 and rewrite.namespace == "team-b"
    removed, added = changed_lines(before, after)
    # A flow mapping takes the field inline; its four-space block keeps four spaces.
    assert removed == [] and added == ["      promotedVersion: 4\n"]
    docs_after = list(yaml.safe_load_all(after))
    assert docs_after[:3] == docs_before[:3] and docs_after[4] == docs_before[4]
    assert docs_after[3]["spec"]["production"] == {"promotion": "Manual", "promotedVersion": 4}


def test_multi_document_flow_list_takes_and_loses_items(tmp_path):
    path = multi_file(tmp_path)
    before = path.read_text()
    rewrite_file(path, Decision("reject", "breast-cancer-manual", 2, "slow"), "team-b")
    middle = path.read_text()
    assert changed_lines(before, middle) == (
        ['  approval: {policy: Manual, rejectedVersions: [{version: 1, reason: "too slow"}]}\n'],
        [
            '  approval: {policy: Manual, rejectedVersions: [{version: 1, reason: "too slow"}, '
            "{version: 2, reason: slow}]}\n"
        ],
    )
    rewrite_file(path, Decision("approve", "breast-cancer-manual", 1), "team-b")
    assert changed_lines(middle, path.read_text())[1] == [
        "  approval: {policy: Manual, rejectedVersions: [{version: 2, reason: slow}], "
        "approvedVersion: 1}\n"
    ]


def test_multi_document_name_clash_needs_a_namespace(tmp_path):
    path = multi_file(tmp_path)
    before = path.read_bytes()
    with pytest.raises(
        ManifestError,
        match=r"2 ModelDeployments named breast-cancer-manual .*"
        r"namespaces team-a, team-b\): pass -n/--namespace",
    ):
        rewrite_file(path, Decision("approve", "breast-cancer-manual", 1))
    with pytest.raises(ManifestError, match=r"no ModelDeployment named churn .*it has: "):
        rewrite_file(path, Decision("approve", "churn", 1))
    with pytest.raises(ManifestError, match=r"in namespace team-c"):
        rewrite_file(path, Decision("approve", "breast-cancer-manual", 1), "team-c")
    assert path.read_bytes() == before
    # A document without a namespace matches any: it takes the one it is applied to.
    rewrite_file(path, Decision("approve", "breast-cancer-automatic", 5), "prod")
    assert (
        yaml.safe_load_all(path.read_text()).__next__()["spec"]["approval"]["approvedVersion"] == 5
    )


def test_two_documents_without_namespaces_are_ambiguous_even_with_one(tmp_path):
    text = (EXAMPLES / "manual.yaml").read_text()
    path = tmp_path / "twice.yaml"
    path.write_text(text + "---\n" + text)
    with pytest.raises(ManifestError, match=r"give each its own metadata\.namespace"):
        rewrite_file(path, Decision("approve", NAMES["manual"], 1), "ml")


def test_crlf_file_stays_crlf(tmp_path):
    path = tmp_path / "crlf.yaml"
    path.write_bytes((EXAMPLES / "local.yaml").read_bytes().replace(b"\n", b"\r\n"))
    before = path.read_bytes()
    rewrite_file(path, Decision("reject", NAMES["local"], 2, "r"))
    after = path.read_bytes()
    assert b"\n" not in after.replace(b"\r\n", b"")
    removed, added = changed_lines(before.decode(), after.decode())
    assert removed == [] and added == [
        "    rejectedVersions:\r\n",
        "      - version: 2\r\n",
        "        reason: r\r\n",
    ]


def test_empty_and_null_fields_take_the_value(tmp_path):
    text = (
        "kind: ModelDeployment\n"
        "metadata:\n"
        "  name: n\n"
        "spec:\n"
        "  approval:\n"
        "    approvedVersion:   # to fill in\n"
        "  production: ~\n"
    )
    new, _, _ = rewrite_text(text, Decision("approve", "n", 2))
    assert changed_lines(text, new)[1] == ["    approvedVersion: 2   # to fill in\n"]
    new2, _, _ = rewrite_text(new, Decision("promote", "n", 2))
    assert changed_lines(new, new2)[1] == ["  production: {promotedVersion: 2}\n"]


def test_file_mode_kept_and_invalid_yaml_refused(tmp_path):
    path = copy_example(tmp_path, "manual")
    path.chmod(0o640)
    rewrite_file(path, Decision("approve", NAMES["manual"], 1))
    assert path.stat().st_mode & 0o777 == 0o640
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: ModelDeployment\nmetadata: {name: x\n")
    with pytest.raises(ManifestError, match="not valid YAML"):
        rewrite_file(bad, Decision("approve", "x", 1))


# -- the command -------------------------------------------------------------------------------


def test_cli_rewrites_and_prints_the_diff(tmp_path, capsys, monkeypatch):
    path = copy_example(tmp_path, "manual")
    monkeypatch.chdir(tmp_path)
    argv = ["approve", NAMES["manual"], "--version", "3", "-f", "manual.yaml"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("--- a/manual.yaml\n+++ b/manual.yaml\n@@ ")
    assert "\n+    approvedVersion: 3\n" in out
    assert "wrote manual.yaml: approve version 3 of breast-cancer-manual" in out
    assert "\x1b[" not in out  # plain when not a terminal
    assert yaml.safe_load(path.read_text())["spec"]["approval"]["approvedVersion"] == 3

    assert (
        cli.main(
            ["reject", NAMES["manual"], "--version", "3", "--reason", "x", "-f", "manual.yaml"]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("modeldeploy reject: version 3 is spec.approval.approvedVersion")

    with pytest.raises(SystemExit):  # reject without a reason is refused by the parser
        cli.main(["reject", NAMES["manual"], "--version", "4", "-f", "manual.yaml"])


# -- the README's commands run as written ------------------------------------------------------


def readme_block(marker: str, lang: str) -> str:
    text = (ROOT / "README.md").read_text()
    found = re.search(rf"<!-- {marker} -->\n```{lang}\n(.*?)```\n<!-- /{marker} -->", text, re.S)
    assert found, f"README.md lost its {marker} block"
    return found.group(1)


def test_readme_decisions_run_as_written(tmp_path):
    """The README's commands, in a copy of the checkout's layout; the diff it shows is what the
    first one prints."""
    (tmp_path / "manifests" / "examples").mkdir(parents=True)
    manifest = tmp_path / "manifests" / "examples" / "manual.yaml"
    manifest.write_bytes((EXAMPLES / "manual.yaml").read_bytes())
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    first, *_ = readme_block("decisions", "sh").splitlines()
    shown = re.search(r"```diff\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert shown
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", first],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout == shown.group(1)
    manifest.write_bytes((EXAMPLES / "manual.yaml").read_bytes())
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block("decisions", "sh")],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    removed, added = changed_lines((EXAMPLES / "manual.yaml").read_text(), manifest.read_text())
    assert removed == []
    assert added == [
        "    approvedVersion: 3\n",
        "    rejectedVersions:\n",
        "      - version: 2\n",
        "        reason: recall fell on the 2024 rows\n",
        "    promotedVersion: 3\n",
    ]
