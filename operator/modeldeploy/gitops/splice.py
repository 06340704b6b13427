"""Splice a decision's edits into a manifest's text at the positions ruamel.yaml's round-trip
composer gives each node, leaving every other byte of the file as it was."""

from __future__ import annotations

from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from modeldeploy.gitops.decisions import Edit, PutItem, RemoveItem, SetScalar
from modeldeploy.gitops.yaml_style import (
    Style,
    block,
    document_style,
    flow,
    nest,
    scalar,
    seq_lines,
)

NULL_TAG = "tag:yaml.org,2002:null"


class ManifestError(Exception):
    """The file cannot take the decision as asked; nothing was written."""


# -- the splice ----------------------------------------------------------------------------


def apply_edit(text: str, index: int, edit: Edit) -> str:
    """`text` with `edit` spliced into its document number `index`."""
    return _apply(text, list(YAML().compose_all(text))[index], edit)


def _apply(text: str, doc: Node, edit: Edit) -> str:
    style = document_style(text, doc)
    parent, key_node, node, missing = _locate(doc, edit.path)
    if isinstance(edit, SetScalar):
        if missing:
            return _insert(text, parent, key_node, node, nest(missing, edit.value), style)
        return _set_scalar(text, key_node, node, edit.value, ".".join(edit.path))
    if isinstance(edit, PutItem):
        if missing:
            return _insert(text, parent, key_node, node, nest(missing, [edit.item]), style)
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
    style: Style,
) -> str:
    """Add the nested mapping `value` ({part: {...}}) under `node`: a mapping, or a null to
    replace."""
    ((name, inner),) = value.items()
    if _is_null(node):
        assert key is not None
        if node.start_mark.index != node.end_mark.index:  # an explicit `~` or `null`
            return _splice(text, node.start_mark.index, node.end_mark.index, flow(value))
        if parent is not None and parent.flow_style:
            colon = text.index(":", key.end_mark.index)
            return text[: colon + 1] + " " + flow(value) + text[colon + 1 :]
        lines = block(name, inner, key.start_mark.column + style.step, style)
        return _insert_lines(text, _line_end(text, key.end_mark.index), lines, style)
    assert isinstance(node, MappingNode)
    if node.flow_style:
        entry = f"{name}: {flow(inner)}"
        if node.value:
            end = _end(node.value[-1][1])
            return _splice(text, end, end, ", " + entry)
        close = node.end_mark.index - 1
        return _splice(text, close, close, entry)
    column = node.value[0][0].start_mark.column
    at = _after_comments(text, _after(text, node), column)
    return _insert_lines(text, at, block(name, inner, column, style), style)


def _put_item(text: str, key: Node | None, node: Node, edit: PutItem, style: Style) -> str:
    dotted = ".".join(edit.path)
    if _is_null(node):
        assert key is not None
        if node.start_mark.index != node.end_mark.index:
            return _splice(text, node.start_mark.index, node.end_mark.index, flow([edit.item]))
        lines = seq_lines([edit.item], key.start_mark.column + style.dash, style)
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
            return _splice(text, end, end, ", " + flow(edit.item))
        close = node.end_mark.index - 1
        return _splice(text, close, close, flow(edit.item))
    dash = node.start_mark.column
    first = node.value[0]
    item_style = Style(style.step, style.dash, first.start_mark.column - dash, style.newline)
    at = _after_comments(text, _after(text, node), dash)
    return _insert_lines(text, at, seq_lines([edit.item], dash, item_style), style)


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
            spans.append((node.start_mark.index, node.end_mark.index, scalar(value)))
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


def _insert_lines(text: str, at: int, lines: list[str], style: Style) -> str:
    lead = style.newline if at == len(text) and text and not text.endswith("\n") else ""
    return _splice(text, at, at, lead + "".join(line + style.newline for line in lines))


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def _scalar_value(node: Node) -> object:
    if not isinstance(node, ScalarNode):
        return None
    return YAML(typ="safe", pure=True).load(node.value) if node.style is None else node.value
