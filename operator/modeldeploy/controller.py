"""One reconcile pass for one resource: parse, observe, plan, execute.

Framework-free and synchronous, so the kopf handlers stay thin and tests can drive a pass with
a real provider and a real resource body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modeldeploy.providers import ProviderFactory
from modeldeploy.providers.base import ProviderError, TransientError
from modeldeploy.reconcile.conditions import merge_conditions, stalled_conditions
from modeldeploy.reconcile.executor import execute
from modeldeploy.reconcile.planner import Context, Event, Timing, invalid_spec, plan
from modeldeploy.spec import SpecError, parse_spec

log = logging.getLogger(__name__)
DEFAULT_TIMING = Timing()


@dataclass
class PassResult:
    status: dict
    events: list[Event] = field(default_factory=list)
    requeue_after: float = 600.0
    transient: bool = False


def backoff(failures: int, timing: Timing) -> float:
    """Exponential backoff for transient errors: act, 2x, 4x ... capped at the poll interval."""
    return min(timing.poll, max(timing.act, 1.0) * 2 ** max(failures - 1, 0))


def reconcile(
    body: dict,
    providers: ProviderFactory,
    *,
    timing: Timing = DEFAULT_TIMING,
    failures: int = 0,
    now: datetime | None = None,
) -> PassResult:
    meta = body.get("metadata", {})
    status = dict(body.get("status") or {})
    ctx = Context(
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        generation=int(meta.get("generation", 1)),
        now=now or datetime.now(UTC),
    )
    try:
        spec = parse_spec(body.get("spec") or {})
        spec = spec.with_default_provider(providers.default)
        provider = providers.get(spec)
    except SpecError as err:
        result = invalid_spec(status, str(err), ctx)
        return PassResult(result.status, result.events, result.requeue_after)

    try:
        observed = provider.observe(spec, status, namespace=ctx.namespace, name=ctx.name)
        the_plan = plan(spec, status, observed, ctx, timing)
        outcome = execute(the_plan, provider, spec, ctx) if the_plan.actions else None
    except TransientError as err:
        return _transient(status, f"reading remote state: {err}", ctx, failures + 1, timing)
    except ProviderError as err:
        return _unreadable(status, str(err), ctx, timing)
    except Exception as err:  # a bug or an unforeseen library error: say so, back off, retry
        log.exception("%s/%s: reconcile pass failed", ctx.namespace, ctx.name)
        return _transient(
            status, f"unexpected {type(err).__name__}: {err}", ctx, failures + 1, timing
        )
    # A provider whose observe is cheap and local asks to be looked at more often when steady.
    requeue = min(the_plan.requeue_after, getattr(provider, "max_resync_seconds", None) or 1e9)
    if outcome is None:
        return PassResult(the_plan.status, the_plan.events, requeue)
    if outcome.transient_error:
        result = _transient(outcome.status, outcome.transient_error, ctx, failures + 1, timing)
        result.events[:0] = outcome.events
        return result
    return PassResult(outcome.status, outcome.events, the_plan.requeue_after)


def _unreadable(status: dict, message: str, ctx: Context, timing: Timing) -> PassResult:
    """The provider refuses to show remote state (access denied, missing credentials, an
    unreadable metrics file): nothing can move until a person acts; look again at resync."""
    text = f"cannot read remote state: {message}"
    new = dict(status)
    new.update(observedGeneration=ctx.generation, phase="Failed", message=text)
    new["conditions"] = merge_conditions(
        status.get("conditions"),
        stalled_conditions("RemoteError", text),
        generation=ctx.generation,
        now=ctx.now,
    )
    events = [] if status.get("message") == text else [Event("Warning", "RemoteError", text)]
    return PassResult(new, events, timing.resync)


def _transient(
    status: dict, message: str, ctx: Context, failures: int, timing: Timing
) -> PassResult:
    delay = backoff(failures, timing)
    status = dict(status)
    status["observedGeneration"] = ctx.generation
    status["message"] = f"retrying in {delay:.0f}s after a transient error: {message}"
    status["conditions"] = merge_conditions(
        status.get("conditions"),
        {"Reconciling": ("True", "RetryingAfterError", status["message"])},
        generation=ctx.generation,
        now=ctx.now,
    )
    log.warning("%s/%s: %s", ctx.namespace, ctx.name, status["message"])
    return PassResult(status, [Event("Warning", "TransientError", message)], delay, transient=True)
