"""Deletion: honour spec.deletionPolicy before the finalizer lets the resource go.

The model package group and its versions are never deleted: they are the registry's history
and may be shared with other deployments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modeldeploy import naming
from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.errors import ProviderError, TransientError
from modeldeploy.providers.interface import Provider
from modeldeploy.reconcile.reasons import Reason
from modeldeploy.reconcile.types import Event
from modeldeploy.remote import Project
from modeldeploy.spec import SpecError, parse_spec


@dataclass
class CleanupResult:
    done: bool
    message: str
    events: list[Event] = field(default_factory=list)
    stuck: bool = False  # a terminal error: only a person can release it


def cleanup(body: dict, providers: ProviderFactory) -> CleanupResult:
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace", "default"), meta["name"]
    try:
        spec = parse_spec(body.get("spec") or {}).with_default_provider(providers.default)
        provider = providers.get(spec)
    except SpecError as err:
        # Nothing could have been deployed from this spec by this generation; let it go.
        return CleanupResult(True, f"invalid spec, nothing to clean up: {err}")
    if spec.deletionPolicy == "Retain":
        kept = "the project, its stacks and endpoints are" if spec.project else "endpoints are"
        text = f"deletionPolicy Retain: remote {kept} kept"
        return CleanupResult(
            True,
            "deletionPolicy Retain: endpoints are kept",
            [Event("Normal", Reason.RETAINED, text)],
        )
    if spec.project is not None:
        return _delete_project(provider, spec.project.name, spec.modelPackageGroup.name, body)
    pending, events = [], []
    for stage in ("production", "staging"):
        endpoint = naming.endpoint_name(namespace, name, stage)
        try:
            gone = provider.hosting.delete(endpoint)
        except TransientError as err:
            return CleanupResult(False, f"deleting {endpoint}: {err}", events)
        except ProviderError as err:
            return _refused(endpoint, err, "the endpoint", events)
        if not gone:
            pending.append(endpoint)
    if pending:
        return CleanupResult(False, f"waiting for {', '.join(pending)} to be deleted", events)
    events.append(Event("Normal", Reason.DELETED, "staging and production endpoints are deleted"))
    group = spec.modelPackageGroup.name
    try:
        events += _release_group(provider, group, f"{namespace}/{name}")
    except TransientError as err:
        return CleanupResult(False, f"releasing model package group {group}: {err}", events)
    return CleanupResult(True, "endpoints deleted", events)


def _refused(what: str, err: ProviderError, kept: str, events: list[Event]) -> CleanupResult:
    """A refusal only a person can lift (access): hold the resource and say both ways out."""
    text = (
        f"deleting {what}: {err}; fix access and it is retried, or set "
        f"spec.deletionPolicy: Retain to let the resource go and keep {kept}"
    )
    events.append(Event("Warning", Reason.DELETION_FAILED, text))
    return CleanupResult(False, text, events, stuck=True)


def _release_group(provider: Provider, group: str, owner: str) -> list[Event]:
    """Let the group go, so that another ModelDeployment may adopt it. Only a transient error
    holds the resource back; on a refusal the group stays owned and the Event says how to
    free it."""
    registry = provider.registry
    try:
        arn = registry.group_arn(group)
        if arn:
            registry.release_group(arn, owner)
    except TransientError:
        raise  # the caller retries
    except ProviderError as err:
        why = f"model package group {group} stays owned by {owner}: {err}"
        hint = "remove its modeldeploy.dev/owner tag to let another ModelDeployment adopt it"
        return [Event("Warning", Reason.DELETION_FAILED, f"{why}; {hint}")]
    return []


def _delete_project(provider: Provider, project: str, group: str, body: dict) -> CleanupResult:
    """Project mode: the project's pipeline made the endpoints; deleting the project, its
    stacks and endpoints takes several looks. A project this resource does not own is left."""
    meta = body["metadata"]
    owner = f"{meta.get('namespace', 'default')}/{meta['name']}"
    recorded = (body.get("status") or {}).get("project") or {}
    events: list[Event] = []
    try:
        found = provider.projects.describe(project)
        if found is None and recorded.get("name") == project and recorded.get("id"):
            # Gone already (an earlier look deleted it): its stacks may still be going.
            found = Project(project, recorded["id"], recorded.get("arn", ""), "", owner=owner)
        if found is not None and found.owner != owner:
            text = f"project {project} belongs to {found.owner or 'no ModelDeployment'}: left alone"
            events.append(Event("Warning", Reason.RETAINED, text))
        elif found is not None:
            done, left = provider.projects.delete(found)
            if not done:
                return CleanupResult(False, f"deleting project {project} and its stacks", events)
            kept = f"; kept: {left}" if left else ""
            text = f"project {project}, its stacks and endpoints are deleted{kept}"
            events.append(Event("Normal", Reason.DELETED, text))
        events += _release_group(provider, group, owner)
    except TransientError as err:
        return CleanupResult(False, f"deleting project {project}: {err}", events)
    except ProviderError as err:
        return _refused(f"project {project}", err, "the project", events)
    return CleanupResult(True, f"project {project} deleted", events)
