"""The one step that ends every pass: observedGeneration, phase, message and conditions
written together from the pass's verdict, and the Events that say what changed."""

from __future__ import annotations

from modeldeploy.reconcile.reasons import Phase
from modeldeploy.reconcile.types import Context, Event, Verdict
from modeldeploy.status import ModelDeploymentStatus, StallStatus

RETRY_HINT = "(change the spec to retry)"


def stall_message(stall: StallStatus) -> str:
    """What a person reads about a terminal failure: the cause, then the way out."""
    return stall.message if stall.rejudged else f"{stall.message} {RETRY_HINT}"


def finalize(
    old: ModelDeploymentStatus, new: ModelDeploymentStatus, verdict: Verdict, ctx: Context
) -> tuple[ModelDeploymentStatus, list[Event]]:
    """`new` (the pass's working status) with the verdict applied; `old` is what was read."""
    status = new.model_copy()  # top-level fields are replaced, never changed in place
    events: list[Event] = []
    phase, message, conds = verdict.phase, verdict.message, verdict.conditions
    if verdict.stall:
        stall = verdict.stall
        message = stall_message(stall)
        phase = Phase.FAILED
        conds.stalled(stall.reason, message)
        conds.not_ready(stall.reason, message)
        status.stalled = stall
        seen = old.stalled
        if seen is None or (seen.key, seen.generation) != (stall.key, stall.generation):
            events.append(Event("Warning", stall.reason, stall.message))
    elif phase is not None and phase != old.phase:
        events.append(Event("Normal", phase, message, phase_change=True))
    status.observedGeneration = ctx.generation
    status.phase = phase or old.phase
    status.message = message
    status.conditions = conds.merge(old.conditions, generation=ctx.generation, now=ctx.now)
    return status, events
