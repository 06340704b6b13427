"""New YAML text for a decision, written in the style of the document it goes into: the
indentation of its mappings and sequences, its line ends, and scalars that read back the same
in YAML 1.2 and 1.1."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

# A string written without quotes must read back as the same string in YAML 1.2 (ruamel) and
# 1.1 (PyYAML, and the go-yaml behind kubectl, where `yes` or `on` are booleans).
PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/()-]*")


@dataclass(frozen=True)
class Style:
    """How the document indents: a nested mapping's keys, a sequence's dash and its item."""

    step: int = 2
    dash: int = 2  # dash column relative to the sequence's key
    item: int = 2  # item content column relative to the dash
    newline: str = "\n"


def document_style(text: str, doc: Node) -> Style:
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
    return Style(step, step if dash is None else dash, item or 2, newline)


def nest(parts: tuple[str, ...], value: object) -> dict:
    for part in reversed(parts[1:]):
        value = {part: value}
    return {parts[0]: value}


def block(name: str, value: object, column: int, style: Style) -> list[str]:
    pad = " " * column
    if isinstance(value, dict):
        lines = [f"{pad}{name}:"]
        for key, inner in value.items():
            lines += block(key, inner, column + style.step, style)
        return lines
    if isinstance(value, list):
        return [f"{pad}{name}:", *seq_lines(value, column + style.dash, style)]
    return [f"{pad}{name}: {scalar(value)}"]


def seq_lines(items: list, dash: int, style: Style) -> list[str]:
    lines = []
    for item in items:
        fields = list(item.items()) if isinstance(item, dict) else [(None, item)]
        for n, (key, value) in enumerate(fields):
            first = " " * dash + "-" + " " * (style.item - 1)
            lead = first if n == 0 else " " * (dash + style.item)
            lines.append(lead + (f"{key}: " if key is not None else "") + scalar(value))
    return lines


def flow(value: object) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return scalar(value)


def scalar(value: object) -> str:
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
