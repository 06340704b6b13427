"""What each decision means as a change of the spec, on plain data.

A decision is one person's word on one version: approve it, reject it (with a reason), promote
it, or roll production back to it. Each becomes a short list of edits of the spec: the
manifest rewriter (`manifest.py`) turns them into text changes, the live path (`live.py`) into
a server-side apply, and both check their result against `apply_edits` on plain data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

Verb = Literal["approve", "reject", "promote", "rollback"]
VERBS: tuple[Verb, ...] = ("approve", "reject", "promote", "rollback")
KIND = "ModelDeployment"
API_VERSION = "mlops.modeldeploy.dev/v1alpha1"

Path = tuple[str, ...]
APPROVED: Path = ("spec", "approval", "approvedVersion")
REJECTED: Path = ("spec", "approval", "rejectedVersions")
PROMOTED: Path = ("spec", "production", "promotedVersion")
# The CRD's limits on spec.approval.rejectedVersions (crds/modeldeployment.yaml).
MAX_REJECTED = 50
MAX_REASON = 1024


class DecisionError(Exception):
    """A decision refused before anything is written; the message says what to do instead."""


@dataclass(frozen=True)
class Decision:
    verb: Verb
    name: str
    version: int
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.version < 1:
            raise DecisionError(f"--version must be 1 or more, not {self.version}")
        if self.verb == "reject":
            if not self.reason or not self.reason.strip():
                raise DecisionError("reject needs --reason: it is recorded in the registry")
            if len(self.reason) > MAX_REASON:
                raise DecisionError(
                    f"--reason is {len(self.reason)} characters; the CRD allows {MAX_REASON}"
                )

    def summary(self) -> str:
        return {
            "approve": f"approve version {self.version}",
            "reject": f"reject version {self.version}",
            "promote": f"promote version {self.version} to production",
            "rollback": f"roll production back to version {self.version}",
        }[self.verb]


@dataclass(frozen=True)
class SetScalar:
    """Set the integer at `path`, creating the mappings on the way."""

    path: Path
    value: int


@dataclass(frozen=True)
class RemoveItem:
    """Remove the item of the list at `path` whose `key` is `value`."""

    path: Path
    key: str
    value: int


@dataclass(frozen=True)
class PutItem:
    """Add `item` to the list at `path`, or replace the item with the same `key`."""

    path: Path
    key: str
    item: dict


Edit = SetScalar | RemoveItem | PutItem


def get_path(obj: object, path: Path) -> object:
    for part in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def edits_for(decision: Decision, obj: dict) -> list[Edit]:
    """The edits of `obj` (a whole ModelDeployment, as loaded) that record `decision`; empty
    when it is already recorded. Refuses what the CRD would refuse, saying what to do."""
    version = decision.version
    approved = get_path(obj, APPROVED)
    rejected = get_path(obj, REJECTED) or []
    if not isinstance(rejected, list):
        raise DecisionError("spec.approval.rejectedVersions is not a list")
    rejection = next(
        (r for r in rejected if isinstance(r, dict) and r.get("version") == version), None
    )
    if decision.verb == "approve":
        out: list[Edit] = []
        if rejection is not None:
            out.append(RemoveItem(REJECTED, "version", version))
        if approved != version:
            out.append(SetScalar(APPROVED, version))
        return out
    if decision.verb == "reject":
        if approved == version:
            raise DecisionError(
                f"version {version} is spec.approval.approvedVersion, and a version cannot be "
                "both approved and rejected: approve another version first (modeldeploy "
                f"approve {decision.name} --version M), or delete approvedVersion, then reject "
                f"version {version}"
            )
        item = {"version": version, "reason": decision.reason}
        if rejection == item:
            return []
        if rejection is None and len(rejected) >= MAX_REJECTED:
            raise DecisionError(
                f"spec.approval.rejectedVersions already lists {MAX_REJECTED} versions, the "
                "CRD's limit: remove the oldest rejections (they stay Rejected in the registry)"
            )
        return [PutItem(REJECTED, "version", item)]
    # promote and rollback both name the version production should serve.
    return [] if get_path(obj, PROMOTED) == version else [SetScalar(PROMOTED, version)]


def apply_edits(obj: dict, edits: list[Edit]) -> dict:
    """`obj` with `edits` applied, on plain data (a deep copy; `obj` is left alone)."""
    out = copy.deepcopy(obj)
    for edit in edits:
        *parents, last = edit.path
        node = out
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if isinstance(edit, SetScalar):
            node[last] = edit.value
            continue
        items = [i for i in node.get(last) or [] if not _same(i, edit.key, edit)]
        if isinstance(edit, PutItem):
            old = node.get(last) or []
            at = next((n for n, i in enumerate(old) if _same(i, edit.key, edit)), len(old))
            items.insert(at, dict(edit.item))
        if items:
            node[last] = items
        else:
            node.pop(last, None)
    return out


def _same(item: object, key: str, edit: RemoveItem | PutItem) -> bool:
    value = edit.value if isinstance(edit, RemoveItem) else edit.item[key]
    return isinstance(item, dict) and item.get(key) == value
