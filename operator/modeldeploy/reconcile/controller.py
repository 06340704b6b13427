"""One reconcile pass for one resource: parse, observe, plan, execute, finalize.

Framework-free and synchronous, so the kopf handlers stay thin and tests can drive a pass with
a real provider and a real resource body. Every way a pass can end (an invalid spec, remote
state that cannot be read, a transient error, a terminal failure of an action, a plan carried
out) becomes a `Verdict`, written into status by `finalize` exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modeldeploy import metrics
from modeldeploy.policy import PlatformPolicy
from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.errors import ProviderError, TransientError
from modeldeploy.reconcile.actions import stall_key
from modeldeploy.reconcile.conditions import Conditions
from modeldeploy.reconcile.executor import execute
from modeldeploy.reconcile.finalize import finalize
from modeldeploy.reconcile.planner import plan
from modeldeploy.reconcile.reasons import Phase, Reason
from modeldeploy.reconcile.types import DEFAULT_TIMING, Context, Event, Timing, Verdict
from modeldeploy.spec import SpecError, parse_spec
from modeldeploy.status import ModelDeploymentStatus, StallStatus, parse_status

log = logging.getLogger(__name__)


@dataclass
class PassResult:
    status: dict  # as written to the resource
    events: list[Event] = field(default_factory=list)
    requeue_after: float = 600.0
    transient: bool = False


def context(body: dict, now: datetime | None = None) -> Context:
    meta = body.get("metadata", {})
    return Context(
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        generation=int(meta.get("generation", 1)),
        now=now or datetime.now(UTC),
    )


@metrics.timed_pass
def run_pass(
    body: dict,
    providers: ProviderFactory,
    *,
    timing: Timing = DEFAULT_TIMING,
    failures: int = 0,
    now: datetime | None = None,
    policy: PlatformPolicy | None = None,
) -> PassResult:
    ctx = context(body, now)
    old = parse_status(body.get("status"))
    try:
        spec = parse_spec(body.get("spec") or {}).with_default_provider(providers.default)
        # Before any provider is built: a refused role or region must not even be used to read.
        if policy and (refusal := policy.refusal(ctx.namespace, spec)):
            stall = _stall(
                stall_key("policy", refusal), Reason.POLICY_DENIED, refusal, ctx, "policy"
            )
            # Cheap to judge again: a grant the platform team adds is seen at the next poll.
            return _end(old, old, Verdict(Phase.FAILED, refusal, stall=stall), ctx, timing.poll)
        provider = providers.get(spec)
    except SpecError as err:
        stall = _stall("spec", Reason.INVALID_SPEC, str(err), ctx, source="spec")
        return _end(old, old, Verdict(Phase.FAILED, str(err), stall=stall), ctx, float("inf"))

    try:
        hint = old.observe_hint(spec, ctx.owner)
        observed = provider.observe(spec, hint, namespace=ctx.namespace, name=ctx.name)
        the_plan = plan(spec, old, observed, ctx, timing)
        executed = execute(the_plan, provider, spec, ctx) if the_plan.actions else None
    except TransientError as err:
        return _retry(old, old, None, f"reading remote state: {err}", ctx, failures, timing)
    except ProviderError as err:
        # The provider refuses to show remote state (access denied, missing credentials, an
        # unreadable metrics file): nothing can move until a person acts; look again at resync.
        text = f"cannot read remote state: {err}"
        stall = _stall(stall_key("remote", text), Reason.REMOTE_ERROR, text, ctx, source="remote")
        return _end(old, old, Verdict(Phase.FAILED, text, stall=stall), ctx, timing.resync)
    except Exception as err:  # a bug or an unforeseen library error: say so, back off, retry
        log.exception("%s/%s: reconcile pass failed", ctx.namespace, ctx.name)
        text = f"unexpected {type(err).__name__}: {err}"
        return _retry(old, old, None, text, ctx, failures, timing)

    verdict, status, events = the_plan.verdict, the_plan.status, list(the_plan.events)
    if executed is not None:
        status = executed.status
        events += executed.events
        if executed.transient_error:
            return _retry(
                old, status, verdict, executed.transient_error, ctx, failures, timing, events
            )
        verdict.stall = executed.stall or verdict.stall
    # A provider whose observe is cheap and local asks to be looked at more often when steady.
    limit = provider.max_resync_seconds or float("inf")
    return _end(old, status, verdict, ctx, min(verdict.requeue_after, limit), events)


def _stall(key: str, reason: Reason, message: str, ctx: Context, source: str) -> StallStatus:
    return StallStatus(
        key=key, generation=ctx.generation, reason=reason, message=message, source=source
    )


def _end(
    old: ModelDeploymentStatus,
    new: ModelDeploymentStatus,
    verdict: Verdict,
    ctx: Context,
    requeue_after: float,
    events: list[Event] | None = None,
    *,
    transient: bool = False,
) -> PassResult:
    status, more = finalize(old, new, verdict, ctx)
    return PassResult(status.to_dict(), (events or []) + more, requeue_after, transient)


def _retry(
    old: ModelDeploymentStatus,
    new: ModelDeploymentStatus,
    verdict: Verdict | None,
    error: str,
    ctx: Context,
    failures: int,
    timing: Timing,
    events: list[Event] | None = None,
) -> PassResult:
    """A transient error: say so, keep the rest of the verdict, back off exponentially."""
    delay = timing.backoff(failures + 1)
    message = f"retrying in {delay:.0f}s after a transient error: {error}"
    log.warning("%s/%s: %s", ctx.namespace, ctx.name, message)
    verdict = verdict or Verdict(None, message, Conditions())
    verdict.message = message
    verdict.conditions.reconciling(Reason.RETRYING, message)
    warning = Event("Warning", Reason.TRANSIENT_ERROR, error)
    return _end(old, new, verdict, ctx, delay, [*(events or []), warning], transient=True)
