"""The condition setter: what one pass says about each condition, written with kstatus rules.

`Reconciling` and `Stalled` are never both True: marking one clears the other (as Flux's
condition helpers do). Conditions a pass does not set keep their previous value;
`lastTransitionTime` moves only when a condition's status changes.
"""

from __future__ import annotations

from datetime import datetime

from modeldeploy.status import Condition

CONDITION_TYPES = (
    "Ready",
    "Reconciling",
    "Stalled",
    "Registered",
    "Approved",
    "StagingReady",
    "ProductionReady",
)
# (status, reason, message)
Cond = tuple[str, str, str]


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


class Conditions:
    def __init__(self) -> None:
        self._set: dict[str, Cond] = {}

    def set(self, ctype: str, status: bool, reason: str, message: str) -> None:
        self._set[ctype] = ("True" if status else "False", reason, message)

    def message(self, ctype: str) -> str:
        return self._set[ctype][2]

    def reconciling(self, reason: str, message: str) -> None:
        self.set("Reconciling", True, reason, message)
        self.set("Stalled", False, reason, message)

    def stalled(self, reason: str, message: str) -> None:
        self.set("Stalled", True, reason, message)
        self.set("Reconciling", False, reason, message)

    def not_ready(self, reason: str, message: str) -> None:
        self.set("Ready", False, reason, message)

    def ready(self, reason: str, message: str) -> None:
        self.set("Ready", True, reason, message)

    def default(self, reason: str, message: str) -> None:
        """Ready, Reconciling and Stalled that nothing else set are False for this reason."""
        for ctype in ("Ready", "Reconciling", "Stalled"):
            self._set.setdefault(ctype, ("False", reason, message))

    def merge(self, old: list[Condition], *, generation: int, now: datetime) -> list[Condition]:
        """Every known type, in a stable order; `Unknown` for one never set."""
        previous = {c.type: c for c in old}
        merged = []
        for ctype in CONDITION_TYPES:
            before = previous.get(ctype)
            if ctype in self._set:
                status, reason, message = self._set[ctype]
            elif before:
                status, reason, message = before.status, before.reason, before.message
            else:
                status, reason, message = "Unknown", "Initializing", "not yet observed"
            changed = before is None or before.status != status
            merged.append(
                Condition.model_construct(  # values made here: no validation needed
                    type=ctype,
                    status=status,
                    reason=reason,
                    message=message,
                    observedGeneration=generation,
                    lastTransitionTime=timestamp(now) if changed else before.lastTransitionTime,
                )
            )
        return merged


def condition(conditions: list[dict] | None, ctype: str) -> dict | None:
    """A condition of a status as written (a dict), by type."""
    return next((c for c in conditions or [] if c.get("type") == ctype), None)
