"""Record a decision in a manifest file: change one field, keep every other byte.

ruamel.yaml's round-trip composer gives each node of the file its exact position; the rewrite
splices new text in at those positions and leaves the rest of the file alone: comments, key
order, quoting, indentation, flow or block style and the other documents. (Dumping the
round-trip model instead would re-emit the whole document with one indentation setting for
the file, and reformat a manifest whose styles are mixed.) The result is then loaded again and
must equal the old document with the decision applied on plain data (`decisions.apply_edits`),
and the other documents unchanged; anything else is refused and nothing is written.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from modeldeploy.gitops.decisions import (
    KIND,
    REJECTED,
    Decision,
    Edit,
    apply_edits,
    edits_for,
    get_path,
)
from modeldeploy.gitops.splice import ManifestError, apply_edit

__all__ = ["ManifestError", "Rewrite", "find_document", "rewrite_file", "rewrite_text"]


@dataclass(frozen=True)
class Rewrite:
    path: Path
    before: str
    after: str
    document: int  # index of the changed document in the file
    namespace: str | None  # the document's metadata.namespace, if it has one

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def diff(self) -> str:
        # git's a/ and b/ prefixes on a relative path, so `git apply` takes the diff as it is.
        name = str(self.path)
        old, new = (name, name) if self.path.is_absolute() else (f"a/{name}", f"b/{name}")
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=old,
                tofile=new,
            )
        )


def find_document(text: str, name: str, namespace: str | None, where: str = "") -> int:
    """Index of the one ModelDeployment named `name` (in `namespace`, when given) in `text`."""
    docs = _load_all(text, where)
    found, others = [], []
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict) or doc.get("kind") != KIND:
            continue
        meta = doc.get("metadata") or {}
        if meta.get("name") != name:
            others.append(str(meta.get("name")))
            continue
        # A document without a namespace takes the one it is applied to (kubectl -n, kustomize).
        if namespace and meta.get("namespace") not in (None, namespace):
            others.append(f"{meta.get('namespace')}/{name}")
            continue
        found.append(index)
    if not found:
        seen = f" (it has: {', '.join(others)})" if others else " (it has none)"
        scope = f" in namespace {namespace}" if namespace else ""
        raise ManifestError(f"no {KIND} named {name}{scope} in {where or 'the file'}{seen}")
    if len(found) > 1:
        spaces = [str((docs[i].get("metadata") or {}).get("namespace") or "-") for i in found]
        hint = (
            "pass -n/--namespace to pick one"
            if len(set(spaces)) == len(spaces)
            else "give each its own metadata.namespace, or split the file"
        )
        raise ManifestError(
            f"{len(found)} {KIND}s named {name} in {where or 'the file'} (documents "
            f"{', '.join(str(i + 1) for i in found)}, namespaces {', '.join(spaces)}): {hint}"
        )
    return found[0]


def rewrite_text(
    text: str, decision: Decision, namespace: str | None = None, where: str = ""
) -> tuple[str, int, dict]:
    """(new text, index of the changed document, the document as it was) for `decision`."""
    index = find_document(text, decision.name, namespace, where)
    old_docs = _load_all(text, where)
    edits = edits_for(decision, old_docs[index])
    new = text
    for edit in edits:
        new = apply_edit(new, index, edit)
    _verify(old_docs, index, edits, new, where)
    return new, index, old_docs[index]


def rewrite_file(path: Path, decision: Decision, namespace: str | None = None) -> Rewrite:
    """Rewrite `path` in place (atomically, mode kept) and say what changed."""
    # newline="" keeps CRLF files CRLF: positions and the spliced text use the file's own ends.
    with open(path, encoding="utf-8", newline="") as f:
        before = f.read()
    after, index, doc = rewrite_text(before, decision, namespace, where=str(path))
    if after != before:
        _write_atomically(path, after)
    meta = doc.get("metadata") or {}
    return Rewrite(path, before, after, index, meta.get("namespace"))


# -- loading and checking --------------------------------------------------------------------


def _load_all(text: str, where: str) -> list:
    try:
        return list(YAML(typ="safe", pure=True).load_all(text))
    except YAMLError as err:
        raise ManifestError(f"{where or 'the file'} is not valid YAML: {err}") from err


def _normal(doc: object) -> object:
    """A document as compared: an empty rejectedVersions is the same as none."""
    if isinstance(doc, dict) and get_path(doc, REJECTED) == []:
        approval = dict(doc["spec"]["approval"])
        del approval["rejectedVersions"]
        return {**doc, "spec": {**doc["spec"], "approval": approval}}
    return doc


def _verify(old_docs: list, index: int, edits: list[Edit], new: str, where: str) -> None:
    expected = list(old_docs)
    expected[index] = apply_edits(old_docs[index], edits)
    try:
        got = _load_all(new, where)
    except ManifestError as err:
        raise ManifestError(f"the rewrite of {where} did not parse; nothing written") from err
    if [_normal(d) for d in got] != [_normal(d) for d in expected]:
        raise ManifestError(
            f"the rewrite of {where or 'the file'} would change more than the decision's "
            "field; nothing written (edit it by hand)"
        )


def _write_atomically(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
