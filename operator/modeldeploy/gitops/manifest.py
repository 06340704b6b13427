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
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modeldeploy.gitops.decisions import (
    KIND,
    REJECTED,
    Decision,
    Edit,
    PutItem,
    RemoveItem,
    SetScalar,
    apply_edits,
    edits_for,
    get_path,
)

NULL_TAG = "tag:yaml.org,2002:null"
# A string written without quotes must read back as the same string in YAML 1.2 (ruamel) and
# 1.1 (PyYAML, and the go-yaml behind kubectl, where `yes` or `on` are booleans).
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/()-]*")


class ManifestError(Exception):
    """The file cannot take the decision as asked; nothing was written."""


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


@dataclass(frozen=True)
class _Style:
    """How the document indents: a nested mapping's keys, a sequence's dash and its item."""

    step: int = 2
    dash: int = 2  # dash column relative to the sequence's key
    item: int = 2  # item content column relative to the dash
    newline: str = "\n"


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
        new = _apply(new, _compose_all(new)[index], edit)
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


# -- the splice ----------------------------------------------------------------------------


def _apply(text: str, doc: Node, edit: Edit) -> str:
    style = _style(text, doc)
    parent, key_node, node, missing = _locate(doc, edit.path)
    if isinstance(edit, SetScalar):
        if missing:
            return _insert(text, parent, key_node, node, _nest(missing, edit.value), style)
        return _set_scalar(text, key_node, node, edit.value, ".".join(edit.path))
    if isinstance(edit, PutItem):
        if missing:
            return _insert(text, parent, key_node, node, _nest(missing, [edit.item]), style)
        return _put_item(text, key_node, node, edit, style)
    if missing:
        return text  # nothing to remove
    return _remove_item(text, parent, key_node, node, edit)


def _locate(doc: Node, path: tuple[str, ...]):
    """Walk `path` from the document: (parent mapping, key node, node, the parts not found).

    When parts are missing, `node` is the deepest mapping found (or a null it should replace)
    and `key_node` its key."""
    parent: MappingNode | None = None
    key_node: Node | None = None
    node: Node = doc
    for depth, part in enumerate(path):
        if _is_null(node) and key_node is not None:
            return parent, key_node, node, path[depth:]
        if not isinstance(node, MappingNode):
            raise ManifestError(f"{'.'.join(path[:depth])} is not a mapping")
        found = _get(node, part)
        if found is None:
            return parent, key_node, node, path[depth:]
        parent, (key_node, node) = node, found
    return parent, key_node, node, ()


def _get(mapping: MappingNode, key: str) -> tuple[Node, Node] | None:
    return next(((k, v) for k, v in mapping.value if getattr(k, "value", None) == key), None)


def _set_scalar(text: str, key: Node | None, node: Node, value: int, dotted: str) -> str:
    if _is_null(node) and node.start_mark.index == node.end_mark.index:
        assert key is not None
        colon = text.index(":", key.end_mark.index)  # `key:` with nothing after it
        return text[: colon + 1] + f" {value}" + text[colon + 1 :]
    if not isinstance(node, ScalarNode) or node.style in ("|", ">"):
        raise ManifestError(f"{dotted} is not a number in the file: edit it by hand")
    return _splice(text, node.start_mark.index, node.end_mark.index, str(value))


def _insert(
    text: str,
    parent: MappingNode | None,
    key: Node | None,
    node: Node,
    value: dict,
    style: _Style,
) -> str:
    """Add the nested mapping `value` ({part: {...}}) under `node`: a mapping, or a null to
    replace."""
    ((name, inner),) = value.items()
    if _is_null(node):
        assert key is not None
        if node.start_mark.index != node.end_mark.index:  # an explicit `~` or `null`
            return _splice(text, node.start_mark.index, node.end_mark.index, _flow(value))
        if parent is not None and parent.flow_style:
            colon = text.index(":", key.end_mark.index)
            return text[: colon + 1] + " " + _flow(value) + text[colon + 1 :]
        lines = _block(name, inner, key.start_mark.column + style.step, style)
        return _insert_lines(text, _line_end(text, key.end_mark.index), lines, style)
    assert isinstance(node, MappingNode)
    if node.flow_style:
        entry = f"{name}: {_flow(inner)}"
        if node.value:
            end = _end(node.value[-1][1])
            return _splice(text, end, end, ", " + entry)
        close = node.end_mark.index - 1
        return _splice(text, close, close, entry)
    column = node.value[0][0].start_mark.column
    at = _after_comments(text, _after(text, node), column)
    return _insert_lines(text, at, _block(name, inner, column, style), style)


def _put_item(text: str, key: Node | None, node: Node, edit: PutItem, style: _Style) -> str:
    dotted = ".".join(edit.path)
    if _is_null(node):
        assert key is not None
        if node.start_mark.index != node.end_mark.index:
            return _splice(text, node.start_mark.index, node.end_mark.index, _flow([edit.item]))
        lines = _seq_lines([edit.item], key.start_mark.column + style.dash, style)
        return _insert_lines(text, _line_end(text, key.end_mark.index), lines, style)
    if not isinstance(node, SequenceNode):
        raise ManifestError(f"{dotted} is not a list in the file: edit it by hand")
    for item in node.value:
        existing = _get(item, edit.key) if isinstance(item, MappingNode) else None
        if existing and _scalar_value(existing[1]) == edit.item[edit.key]:
            return _replace_fields(text, item, edit.item, dotted)
    if node.flow_style:
        if node.value:
            end = _end(node.value[-1])
            return _splice(text, end, end, ", " + _flow(edit.item))
        close = node.end_mark.index - 1
        return _splice(text, close, close, _flow(edit.item))
    dash = node.start_mark.column
    first = node.value[0]
    item_style = _Style(style.step, style.dash, first.start_mark.column - dash, style.newline)
    at = _after_comments(text, _after(text, node), dash)
    return _insert_lines(text, at, _seq_lines([edit.item], dash, item_style), style)


def _replace_fields(text: str, item: MappingNode, fields: dict, dotted: str) -> str:
    """Set each scalar field of an existing list item (from the end, so positions hold)."""
    spans = []
    for name, value in fields.items():
        found = _get(item, name)
        if found is None:
            raise ManifestError(f"an item of {dotted} has no {name}: edit it by hand")
        node = found[1]
        if not isinstance(node, ScalarNode) or node.style in ("|", ">"):
            raise ManifestError(f"{dotted}: {name} is a block scalar: edit it by hand")
        if _scalar_value(node) != value:
            spans.append((node.start_mark.index, node.end_mark.index, _scalar(value)))
    for start, end, new in sorted(spans, reverse=True):
        text = _splice(text, start, end, new)
    return text


def _remove_item(
    text: str, parent: MappingNode | None, key: Node | None, node: Node, edit: RemoveItem
) -> str:
    if not isinstance(node, SequenceNode):
        return text
    index = next(
        (
            n
            for n, item in enumerate(node.value)
            if isinstance(item, MappingNode)
            and (found := _get(item, edit.key))
            and _scalar_value(found[1]) == edit.value
        ),
        None,
    )
    if index is None:
        return text
    items = node.value
    if len(items) == 1:
        # The list goes with its last item: the whole `key: ...` entry, unless it is the only
        # entry of its mapping (then `[]`, so the mapping stays a mapping).
        if parent is None or key is None or parent.flow_style or len(parent.value) == 1:
            return _splice(text, node.start_mark.index, node.end_mark.index, "[]")
        start = _line_start(text, key.start_mark.index)
        if text[start : key.start_mark.index].strip():
            raise ManifestError(f"{'.'.join(edit.path)}: an unusual layout; edit it by hand")
        return _splice(text, start, _after(text, node), "")
    item = items[index]
    if node.flow_style:
        if index + 1 < len(items):
            return _splice(text, item.start_mark.index, items[index + 1].start_mark.index, "")
        return _splice(text, _end(items[index - 1]), _end(item), "")
    start = _line_start(text, item.start_mark.index)
    if text[start : item.start_mark.index].strip() != "-":
        raise ManifestError(f"{'.'.join(edit.path)}: an unusual layout; edit it by hand")
    return _splice(text, start, _after(text, item), "")


# -- positions -------------------------------------------------------------------------------


def _splice(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """Just past the newline that ends the line holding `index` (the end of the text if none)."""
    newline = text.find("\n", index)
    return len(text) if newline < 0 else newline + 1


def _end(node: Node) -> int:
    """Where a node's own text ends (a block collection's end mark runs on to the next token)."""
    if isinstance(node, MappingNode | SequenceNode) and not node.flow_style:
        return _last_leaf(node).end_mark.index
    return node.end_mark.index


def _after(text: str, node: Node) -> int:
    """The start of the line after `node`'s last line: where a sibling entry goes."""
    end = _last_leaf(node).end_mark.index
    # A block scalar or an empty value ends at the start of the next line already.
    return end if end == 0 or text[end - 1] == "\n" else _line_end(text, end)


def _after_comments(text: str, at: int, column: int) -> int:
    """Past the comment lines at `at` indented at least `column`: they read as the end of the
    block above (a commented-out `# approvedVersion: 1`), so a new entry goes after them."""
    while at < len(text):
        line = text[at : _line_end(text, at)]
        stripped = line.lstrip(" ")
        if not stripped.startswith("#") or len(line) - len(stripped) < column:
            break
        at = _line_end(text, at)
    return at


def _last_leaf(node: Node) -> Node:
    if isinstance(node, MappingNode | SequenceNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return _last_leaf(last[1] if isinstance(node, MappingNode) else last)
    return node


def _insert_lines(text: str, at: int, lines: list[str], style: _Style) -> str:
    lead = style.newline if at == len(text) and text and not text.endswith("\n") else ""
    return _splice(text, at, at, lead + "".join(line + style.newline for line in lines))


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def _scalar_value(node: Node) -> object:
    if not isinstance(node, ScalarNode):
        return None
    return YAML(typ="safe", pure=True).load(node.value) if node.style is None else node.value


# -- new text in the document's own style ----------------------------------------------------


def _style(text: str, doc: Node) -> _Style:
    step = dash = item = None
    stack: list[tuple[Node | None, Node]] = [(None, doc)]
    while stack and (step is None or dash is None):
        key, node = stack.pop()
        if isinstance(node, MappingNode) and not node.flow_style and node.value:
            if key is not None and step is None:
                step = node.value[0][0].start_mark.column - key.start_mark.column
            stack.extend(node.value[::-1])
        elif isinstance(node, SequenceNode) and not node.flow_style and node.value:
            if key is not None and dash is None:
                dash = node.start_mark.column - key.start_mark.column
                item = node.value[0].start_mark.column - node.start_mark.column
            stack.extend((None, v) for v in node.value[::-1])
    step = step if step and step > 0 else 2
    newline = "\r\n" if "\r\n" in text else "\n"
    return _Style(step, step if dash is None else dash, item or 2, newline)


def _nest(parts: tuple[str, ...], value: object) -> dict:
    for part in reversed(parts[1:]):
        value = {part: value}
    return {parts[0]: value}


def _block(name: str, value: object, column: int, style: _Style) -> list[str]:
    pad = " " * column
    if isinstance(value, dict):
        lines = [f"{pad}{name}:"]
        for key, inner in value.items():
            lines += _block(key, inner, column + style.step, style)
        return lines
    if isinstance(value, list):
        return [f"{pad}{name}:", *_seq_lines(value, column + style.dash, style)]
    return [f"{pad}{name}: {_scalar(value)}"]


def _seq_lines(items: list, dash: int, style: _Style) -> list[str]:
    lines = []
    for item in items:
        fields = list(item.items()) if isinstance(item, dict) else [(None, item)]
        for n, (key, value) in enumerate(fields):
            first = " " * dash + "-" + " " * (style.item - 1)
            lead = first if n == 0 else " " * (dash + style.item)
            lines.append(lead + (f"{key}: " if key is not None else "") + _scalar(value))
    return lines


def _flow(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def _scalar(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"cannot write {value!r}")
    if isinstance(value, int):
        return str(value)
    if PLAIN.fullmatch(value) and not value.endswith(" ") and _reads_back(value):
        return value
    # A JSON string is a YAML double-quoted scalar, escapes and all, in both YAML versions.
    return json.dumps(value, ensure_ascii=False)


def _reads_back(value: str) -> bool:
    try:
        return yaml.safe_load(value) == value and YAML(typ="safe", pure=True).load(value) == value
    except (yaml.YAMLError, YAMLError):
        return False


# -- loading and checking --------------------------------------------------------------------


def _compose_all(text: str) -> list[Node]:
    return list(YAML().compose_all(text))


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
