"""metav1.Condition bookkeeping: one place that knows the shape and the transition rule."""

from __future__ import annotations

from datetime import datetime

CONDITION_TYPES = (
    "Ready",
    "Reconciling",
    "Stalled",
    "Registered",
    "Approved",
    "StagingReady",
    "ProductionReady",
)


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    old: list[dict] | None,
    new: dict[str, tuple[str, str, str]],
    *,
    generation: int,
    now: datetime,
) -> list[dict]:
    """Return conditions for every known type, in a stable order.

    `new` maps type -> (status, reason, message). A type missing from `new` keeps its previous
    value, or is `Unknown` on the first visit. `lastTransitionTime` moves only when the status
    value changes.
    """
    previous = {c.get("type"): c for c in old or []}
    merged = []
    for ctype in CONDITION_TYPES:
        before = previous.get(ctype)
        if ctype in new:
            status, reason, message = new[ctype]
        elif before:
            status, reason, message = before["status"], before["reason"], before["message"]
        else:
            status, reason, message = "Unknown", "Initializing", "not yet observed"
        changed = before is None or before.get("status") != status
        merged.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": timestamp(now)
                if changed
                else before.get("lastTransitionTime", timestamp(now)),
            }
        )
    return merged


def condition(conditions: list[dict] | None, ctype: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == ctype), None)


def stalled_conditions(reason: str, message: str) -> dict[str, tuple[str, str, str]]:
    """Ready, Reconciling and Stalled for a resource that waits for a person (kstatus)."""
    return {
        "Ready": ("False", reason, message),
        "Reconciling": ("False", reason, message),
        "Stalled": ("True", reason, message),
    }
