"""kopf handlers: thin adapters from Kubernetes events to one reconcile pass.

create / update / resume run a pass at once (so a change of approvedVersion or promotedVersion
acts immediately); a short timer runs the next pass when the previous one asked for it (soon
after an action, every ~30 s while remote state is transitional, slowly when steady).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

import kopf

from modeldeploy import controller, remote_cleanup
from modeldeploy.providers import ProviderFactory
from modeldeploy.reconcile.planner import Event, Timing

GROUP, VERSION, PLURAL = "mlops.modeldeploy.dev", "v1alpha1", "modeldeployments"


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


TIMING = Timing(
    act=_seconds("MODELDEPLOY_ACT_SECONDS", 1),
    poll=_seconds("MODELDEPLOY_POLL_SECONDS", 30),
    resync=_seconds("MODELDEPLOY_RESYNC_SECONDS", 600),
)
TICK = _seconds("MODELDEPLOY_TICK_SECONDS", 2)
PROVIDERS = ProviderFactory()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    # Keep kopf's bookkeeping in annotations: our status schema is structural and owned by us.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.ERROR  # our own Events say what happened, not log lines


def _plain(obj: object) -> dict:
    return json.loads(json.dumps(obj, default=dict))  # kopf views are Mappings


def status_patch(old: dict, new: dict) -> dict:
    """A JSON merge patch turning `old` status into `new`: None removes a key, at any depth."""
    patch: dict = {}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = status_patch(before, value)
            if nested:
                patch[key] = nested
        elif before != value:
            patch[key] = value
    patch.update({key: None for key in old if key not in new})
    return patch


def post_events(body: kopf.Body, events: list[Event]) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1000])


async def run_pass(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    lock = memo.setdefault("lock", asyncio.Lock())
    async with lock:
        resource = _plain(body)
        # Only this operator writes the status, and the one it wrote last may be newer than a
        # body whose watch event has not arrived yet (a restart starts from the body's).
        if "status" in memo:
            resource["status"] = memo["status"]
        old = resource.get("status") or {}
        result = await asyncio.to_thread(
            controller.reconcile,
            resource,
            PROVIDERS,
            timing=TIMING,
            failures=memo.get("failures", 0),
        )
        memo["failures"] = memo.get("failures", 0) + 1 if result.transient else 0
        memo["status"] = result.status
        memo["next_due"] = asyncio.get_running_loop().time() + result.requeue_after
        for key, value in status_patch(old, result.status).items():
            patch.status[key] = value
        post_events(body, result.events)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: object) -> None:
    await run_pass(body, patch, memo)


@kopf.timer(GROUP, VERSION, PLURAL, interval=TICK)
async def resync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: object) -> None:
    if body.metadata.get("deletionTimestamp"):
        return
    if asyncio.get_running_loop().time() >= memo.get("next_due", 0.0):
        await run_pass(body, patch, memo)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, memo: kopf.Memo, **_: object) -> None:
    lock = memo.setdefault("lock", asyncio.Lock())
    async with lock:
        result = await asyncio.to_thread(remote_cleanup.cleanup, _plain(body), PROVIDERS)
    # The same error on every retry is one Event, not one a minute.
    fresh = [e for e in result.events if e.message != memo.get("cleanup_error")]
    post_events(body, fresh)
    if not result.done:
        memo["cleanup_error"] = next((e.message for e in result.events if e.type == "Warning"), "")
        delay = max(TIMING.poll, 60) if result.stuck else min(TIMING.poll, 10)
        raise kopf.TemporaryError(result.message, delay=delay)
