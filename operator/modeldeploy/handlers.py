"""kopf handlers: thin adapters from Kubernetes events to one reconcile pass.

create / update / resume run a pass at once (so a change of approvedVersion or promotedVersion
acts immediately); a daemon per object sleeps until the next pass is due (soon after an action,
every ~30 s while remote state is transitional, slowly when steady: scheduling.py), with no
global tick.

What the handlers need is injected through kopf's memo at startup (`memo.providers`,
`memo.timing`, `memo.policy`, `memo.post_event`, `memo.status_writer`); an embedder or a test
sets its own before the operator starts, and per-object memos (kopf copies the operator's memo
for each object) carry the per-resource bookkeeping: the lock, the last status written,
failures, the pacer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable

import kopf

from modeldeploy import kube_login, kube_status, metrics
from modeldeploy.diffbase import SlimAnnotationsDiffBaseStorage
from modeldeploy.gitops.kube import GROUP, PLURAL, VERSION
from modeldeploy.liveness import ApiServerLost, ApiWatchdog
from modeldeploy.policy import PolicySource
from modeldeploy.providers import ProviderFactory
from modeldeploy.reconcile import cleanup, controller
from modeldeploy.reconcile.types import Event, Timing
from modeldeploy.scheduling import Pacer, next_delay, worker_count, worker_pool

EventSink = Callable[[kopf.Body, Event], None]


def post_event(body: kopf.Body, event: Event) -> None:
    kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1000])


def defaults(memo: kopf.Memo) -> kopf.Memo:
    """Fill in whatever the embedder did not inject."""
    if "providers" not in memo:  # built only when missing: a factory holds clients
        memo["providers"] = ProviderFactory()
    if "timing" not in memo:
        memo["timing"] = Timing.from_env()
    if "policy" not in memo:  # read here, so a broken policy file stops the start
        memo["policy"] = PolicySource.from_env()
    memo.setdefault("post_event", post_event)
    memo.setdefault("status_writer", kube_status.StatusWriter())
    if "watchdog" not in memo:
        memo["watchdog"] = ApiWatchdog()
    return memo


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: object) -> kopf.AiohttpSession | None:
    # kopf's own login through the kubernetes client, named here because it also configures
    # the client that the liveness probe and the status writer use; the pools sized for the
    # work (kube_login.py). Async: the session belongs to the operator's event loop.
    info = kopf.login_via_client(memo=memo, **kwargs)  # type: ignore[arg-type]
    if info is None:
        return None
    kube_login.size_client_pool(worker_count())
    limit = memo.get("api_connections", kube_login.connection_limit())
    return kube_login.bounded_session(info, limit) if limit else None


@kopf.on.probe(id="apiserver")
async def api_server_answers(memo: kopf.Memo, **_: object) -> str:
    try:
        return await asyncio.to_thread(memo.watchdog.probe)
    except ApiServerLost as err:  # permanent: kopf would retry it and /healthz would hang
        raise kopf.PermanentError(str(err)) from err


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: object) -> None:
    # Keep kopf's bookkeeping in annotations: our status schema is structural and owned by us.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = SlimAnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.ERROR  # our own Events say what happened, not log lines
    asyncio.get_running_loop().set_default_executor(worker_pool())  # what passes run in
    defaults(memo)
    memo.providers.warm()
    metrics.serve_from_env()


def _plain(body: kopf.Body) -> dict:
    """The object as plain data, without metadata.managedFields: no pass reads them, and they
    are a large part of a ModelDeployment's body (a field tree per writer)."""
    meta = {key: value for key, value in body.metadata.items() if key != "managedFields"}
    return json.loads(json.dumps({**body, "metadata": meta}, default=dict))  # kopf's views


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


def _pacer(memo: kopf.Memo) -> Pacer:
    return memo.setdefault("pacer", Pacer())


async def _pass_and_write(body: kopf.Body, memo: kopf.Memo) -> None:
    """One chain of passes and its status, written before the object's lock is let go: by
    every caller, so writes never overtake each other. (Returned to kopf as the handler's
    patch, a status landed whenever kopf applied it: at N=1000, after the daemon had written a
    newer one, and 22 resources stayed "Promoting" over a Deployed production.)"""
    async with memo.setdefault("lock", asyncio.Lock()):
        resource = _plain(body)  # here, on the loop kopf replaces bodies on
        result = await asyncio.to_thread(_chain_and_write, body, resource, memo)
        delay = next_delay(result.requeue_after, memo.timing)
        if memo.timing.chain and not result.transient and result.requeue_after <= memo.timing.act:
            delay = 0  # a chain that ran out of time while acting: its status written, it goes on
        _pacer(memo).schedule(delay)


def _chain_and_write(body: kopf.Body, resource: dict, memo: kopf.Memo) -> controller.PassResult:
    """A chain of passes and its status write, in one worker thread from first to last. (Each
    pass and the write waited for a thread again, behind every other resource's: at N=1000
    chains reached their deadline after a step or two, and each break was one status write and
    one Event more.)"""
    # Only this operator writes the status, and the one it wrote last may be newer than a
    # body whose watch event has not arrived yet (a restart starts from the body's).
    if "status" in memo:
        resource["status"] = memo["status"]
    old = resource.get("status") or {}
    result = _chain(body, resource, memo)
    memo["status"] = result.status
    changes = status_patch(old, result.status)
    if changes and not memo.status_writer.patch(body, changes):
        memo.pop("status", None)  # not written: start again from the body's
    return result


def _chain(body: kopf.Body, resource: dict, memo: kopf.Memo) -> controller.PassResult:
    """Passes back to back while each one acted and asks to look at its effect at once, for at
    most `timing.chain` seconds: a pipeline moves as fast as the remote answers, not a step per
    tick. Status is patched once, after the last (a restart resumes from remote state as from
    any pass). Events are posted as each pass says them, but for phase changes: only the phase
    the chain ends in, the one its status shows, is said, and not when an action already said
    it (a phase passed through within one chain came after its action's own Event, and a
    pipeline posted 16 Events instead of 11)."""
    timing = memo.timing
    deadline = time.monotonic() + timing.chain
    first_phase = (resource.get("status") or {}).get("phase")
    said: set[str] = set()
    phase_event: Event | None = None
    while True:
        result = controller.run_pass(
            resource,
            memo.providers,
            timing=timing,
            failures=memo.get("failures", 0),
            policy=memo.policy.current(),
        )
        memo["failures"] = memo.get("failures", 0) + 1 if result.transient else 0
        for event in result.events:
            if event.phase_change:
                phase_event = event
            else:
                memo.post_event(body, event)  # kopf's queue takes Events from any thread
                said.add(event.reason)
        resource["status"] = result.status
        if result.transient or result.requeue_after > timing.act or time.monotonic() >= deadline:
            ended = result.status.get("phase")
            if phase_event and ended != first_phase and phase_event.reason not in said:
                memo.post_event(body, phase_event)
            return result


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def on_change(body: kopf.Body, memo: kopf.Memo, **_: object) -> None:
    await _pass_and_write(body, memo)


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=30)
async def pace(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: object) -> None:
    """Runs the object's next pass when it is due; sleeps (costing nothing) in between."""
    pacer = _pacer(memo)
    while await pacer.sleep_until_due(stopped):
        if body.metadata.get("deletionTimestamp"):
            return
        await _pass_and_write(body, memo)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def on_delete(body: kopf.Body, memo: kopf.Memo, **_: object) -> None:
    async with memo.setdefault("lock", asyncio.Lock()):
        result = await asyncio.to_thread(cleanup.cleanup, _plain(body), memo.providers)
    # The same error on every retry is one Event, not one a minute.
    for event in result.events:
        if event.message != memo.get("cleanup_error"):
            memo.post_event(body, event)
    if not result.done:
        memo["cleanup_error"] = next((e.message for e in result.events if e.type == "Warning"), "")
        poll = memo.timing.poll
        delay = max(poll, 60) if result.stuck else min(poll, 10)
        raise kopf.TemporaryError(result.message, delay=delay)
    metrics.forget_resource(body)
