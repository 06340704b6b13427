"""Record a decision on the live object: server-side apply of that one field, as its own field
manager, and never on an object that Argo CD or Flux applies from git.

Server-side apply treats what a field manager sends as all it wants: a field it owned before
and leaves out is removed. So each apply restates the fields `modeldeploy-cli` already owns
(read back from the object's managedFields, as client-go's Extract functions do) and adds the
decision; an earlier approval survives a later rejection. Removing a version from
rejectedVersions (approving a rejected version) is a JSON patch guarded by a test of that
item, since apply cannot take away an item another manager owns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml
from kubernetes.client.exceptions import ApiException

from modeldeploy.gitops.decisions import (
    API_VERSION,
    KIND,
    REJECTED,
    Decision,
    DecisionError,
    Edit,
    PutItem,
    RemoveItem,
    SetScalar,
    apply_edits,
    edits_for,
    get_path,
)
from modeldeploy.gitops.kube import GROUP, PLURAL, VERSION, Kube, KubeError, api_message

FIELD_MANAGER = "modeldeploy-cli"

# The field managers under which the GitOps controllers write what they apply from git.
GITOPS_MANAGERS = {
    # Argo CD's server-side apply syncs (argo-cd common.ArgoCDSSAManager).
    "argocd-controller": "Argo CD",
    # Argo CD's default client-side apply: kubectl's library names the manager after the binary.
    "argocd-application-controller": "Argo CD",
    # Flux applies Kustomizations with server-side apply, owner field = the controller's name.
    "kustomize-controller": "Flux",
    # Flux HelmReleases: helm-controller sets Helm's ManagedFieldsManager to its own name.
    "helm-controller": "Flux",
}
# What the same tools stamp on the objects they apply; evidence when managedFields say nothing
# (an object last written by someone else's update keeps these).
GITOPS_LABELS = {
    "kustomize.toolkit.fluxcd.io/name": ("Flux", "Kustomization"),
    "helm.toolkit.fluxcd.io/name": ("Flux", "HelmRelease"),
}
GITOPS_ANNOTATIONS = {"argocd.argoproj.io/tracking-id": ("Argo CD", "Application")}


@dataclass(frozen=True)
class GitOpsOwner:
    tool: str  # "Argo CD" | "Flux"
    evidence: str  # what says so, for the message


class GitOpsManaged(DecisionError):
    """The object is applied from git; a change to the live object would be reverted."""


@dataclass
class LiveResult:
    namespace: str
    name: str
    before: dict
    after: dict
    took_over: list[str] = field(default_factory=list)  # "<path> from <manager>"
    owner: GitOpsOwner | None = None  # set when --force overrode a GitOps owner

    @property
    def changed(self) -> bool:
        return self.before.get("spec") != self.after.get("spec")

    def diff(self) -> str:
        import difflib

        where = f"{self.namespace}/{self.name}"
        return "".join(
            difflib.unified_diff(
                _spec_yaml(self.before).splitlines(keepends=True),
                _spec_yaml(self.after).splitlines(keepends=True),
                fromfile=f"a/{where} (live spec)",
                tofile=f"b/{where} (live spec)",
            )
        )


def gitops_owner(obj: dict) -> GitOpsOwner | None:
    meta = obj.get("metadata") or {}
    for entry in meta.get("managedFields") or []:
        tool = GITOPS_MANAGERS.get(entry.get("manager", ""))
        if tool:
            how = entry.get("operation", "")
            return GitOpsOwner(tool, f"field manager {entry['manager']} ({how})")
    for key, value in (meta.get("labels") or {}).items():
        if key in GITOPS_LABELS:
            tool, kind = GITOPS_LABELS[key]
            ns = (meta.get("labels") or {}).get(key.replace("/name", "/namespace"))
            return GitOpsOwner(tool, f"{kind} {ns + '/' if ns else ''}{value} (label {key})")
    for key, value in (meta.get("annotations") or {}).items():
        if key in GITOPS_ANNOTATIONS:
            tool, kind = GITOPS_ANNOTATIONS[key]
            return GitOpsOwner(tool, f"{kind} {value.split(':', 1)[0]} (annotation {key})")
    return None


def refusal(decision: Decision, namespace: str, owner: GitOpsOwner, prog: str) -> str:
    verb = decision.verb
    reason = f" --reason {json.dumps(decision.reason)}" if decision.reason else ""
    return (
        f"refusing to {decision.summary()} on the live object: {namespace}/{decision.name} is "
        f"managed by {owner.tool} ({owner.evidence}), which puts back what is not in git at "
        "its next sync. The change belongs in git: rewrite the manifest and open a pull "
        f"request:\n    {prog} {verb} {decision.name} --version {decision.version}{reason} "
        "-f PATH/TO/MANIFEST.yaml\n(or pass --force to change the live object anyway, until "
        "the next sync)"
    )


def previous_version(kube: Kube, name: str, namespace: str) -> int:
    """What `rollback` goes back to: the live status.production.previousVersion."""
    obj = kube.get(name, namespace)
    previous = get_path(obj, ("status", "production", "previousVersion"))
    if not isinstance(previous, int):
        raise DecisionError(
            f"{namespace}/{name} has no status.production.previousVersion (production has not "
            "served another version yet): pass --version N"
        )
    return previous


def apply_decision(
    kube: Kube,
    decision: Decision,
    namespace: str,
    *,
    force: bool = False,
    prog: str = "modeldeploy",
) -> LiveResult:
    obj = kube.get(decision.name, namespace)
    owner = gitops_owner(obj)
    if owner and not force:
        raise GitOpsManaged(refusal(decision, namespace, owner, prog))
    result = LiveResult(namespace, decision.name, obj, obj, owner=owner)
    edits = edits_for(decision, obj)
    if not edits:
        return result
    result.took_over = _taken_over(obj, edits)
    current = obj
    removals = [e for e in edits if isinstance(e, RemoveItem)]
    if removals:
        current = _remove_items(kube, current, removals, namespace)
    intent = apply_edits(owned_intent(current, FIELD_MANAGER), edits)
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": decision.name, "namespace": namespace},
        "spec": intent.get("spec") or {},
    }
    try:
        # force: the person named this field; another manager's claim on it (kubectl apply of
        # an older manifest, say) is taken over, and the output says from whom.
        result.after = kube.objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            decision.name,
            body,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    except ApiException as err:
        raise KubeError(api_message(err)) from None
    return result


def owned_intent(obj: dict, manager: str) -> dict:
    """The spec fields `manager` owns through apply, with their live values (a partial object)."""
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            fields = (entry.get("fieldsV1") or {}).get("f:spec")
            if fields and isinstance(obj.get("spec"), dict):
                return {"spec": _extract(fields, obj["spec"])}
    return {}


def _extract(fields: dict, value: object) -> object:
    """The part of `value` that the fieldsV1 tree `fields` names."""
    if not fields or set(fields) == {"."}:
        return value  # owned whole
    if isinstance(value, dict):
        out = {}
        for key, sub in fields.items():
            if key.startswith("f:") and key[2:] in value:
                out[key[2:]] = _extract(sub, value[key[2:]])
        return out
    if isinstance(value, list):
        out_items = []
        for item in value:
            for key, sub in fields.items():
                if key.startswith("k:") and isinstance(item, dict):
                    ident = json.loads(key[2:])
                    if all(item.get(k) == v for k, v in ident.items()):
                        out_items.append({**ident, **_extract(sub, item)})  # type: ignore[dict-item]
                elif key.startswith("v:") and json.loads(key[2:]) == item:
                    out_items.append(item)
        return out_items
    return value


def _remove_items(kube: Kube, obj: dict, removals: list[RemoveItem], namespace: str) -> dict:
    items = get_path(obj, REJECTED) or []
    ops: list[dict] = []
    # From the end, so the earlier indexes still hold; `test` makes a concurrent change fail
    # the patch instead of removing the wrong item.
    for index in sorted(
        (n for n, i in enumerate(items) for r in removals if i.get(r.key) == r.value),
        reverse=True,
    ):
        where = "/spec/approval/rejectedVersions/" + str(index)
        ops += [
            {"op": "test", "path": f"{where}/version", "value": items[index]["version"]},
            {"op": "remove", "path": where},
        ]
    if not ops:
        return obj
    try:
        return kube.objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            obj["metadata"]["name"],
            ops,
            field_manager=FIELD_MANAGER,
            _content_type="application/json-patch+json",
        )
    except ApiException as err:
        raise KubeError(api_message(err)) from None


def _taken_over(obj: dict, edits: list[Edit]) -> list[str]:
    """Which other managers own the fields the edits change: '<path> from <manager>'."""
    found = []
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        manager = entry.get("manager", "")
        if manager == FIELD_MANAGER:
            continue
        tree = entry.get("fieldsV1") or {}
        for edit in edits:
            if isinstance(edit, SetScalar):
                owned = _has(tree, [f"f:{p}" for p in edit.path])
                path = ".".join(edit.path)
            elif isinstance(edit, PutItem):
                ident = json.dumps({edit.key: edit.item[edit.key]}, separators=(",", ":"))
                owned = _has(tree, [*(f"f:{p}" for p in edit.path), f"k:{ident}", "f:reason"])
                path = f"{'.'.join(edit.path)}[{edit.key}={edit.item[edit.key]}]"
            else:
                continue
            if owned and get_path(obj, edit.path) is not None:
                found.append(f"{path} from {manager}")
    return found


def _has(tree: dict, keys: list[str]) -> bool:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return False
        tree = tree[key]
    return True


def _spec_yaml(obj: dict) -> str:
    return yaml.safe_dump({"spec": obj.get("spec") or {}}, sort_keys=False, width=1000)
