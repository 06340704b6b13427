"""Types shared along the reconcile path: planner, executor, controller, handlers, preview."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from modeldeploy.reconcile.actions import Action
from modeldeploy.reconcile.conditions import Conditions
from modeldeploy.reconcile.reasons import Phase
from modeldeploy.status import ModelDeploymentStatus, StallStatus


@dataclass(frozen=True)
class Context:
    namespace: str
    name: str
    generation: int
    now: datetime

    @property
    def owner(self) -> str:
        """How this resource is named as the owner of its model package group."""
        return f"{self.namespace}/{self.name}"


def _seconds(var: str, default: float) -> float:
    return float(os.environ.get(var, default))


@dataclass(frozen=True)
class Timing:
    """Requeue delays in seconds."""

    act: float = 1.0  # right after a mutating action: look at its effect
    poll: float = 30.0  # something remote is transitional
    resync: float = 600.0  # steady
    # How long one handler call may chain passes whose next is due at `act` (0: one pass per
    # call, as tests that step through a pipeline want; the operator's default is 5).
    chain: float = 0.0

    @classmethod
    def from_env(cls) -> Timing:
        return cls(
            act=_seconds("MODELDEPLOY_ACT_SECONDS", cls.act),
            poll=_seconds("MODELDEPLOY_POLL_SECONDS", cls.poll),
            resync=_seconds("MODELDEPLOY_RESYNC_SECONDS", cls.resync),
            chain=_seconds("MODELDEPLOY_CHAIN_SECONDS", 5.0),
        )

    def backoff(self, failures: int) -> float:
        """After transient errors: act, 2x, 4x ... capped at the poll interval."""
        return min(self.poll, max(self.act, 1.0) * 2 ** max(failures - 1, 0))


DEFAULT_TIMING = Timing()


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    # The phase changed (finalize): a chain of passes says only the phase it ends in.
    phase_change: bool = False


@dataclass
class Verdict:
    """How one pass ends: phase, message, the conditions it set, when to look again, and the
    failure that stalls it (kept in status.stalled so it is not retried until the spec
    changes)."""

    phase: Phase | None
    message: str
    conditions: Conditions = field(default_factory=Conditions)
    requeue_after: float = 600.0
    stall: StallStatus | None = None


@dataclass
class Plan:
    """What the planner decided: actions to take now, the status they start from, the Events
    of what it saw, and its verdict (finalized once per pass, after execution)."""

    actions: list[Action]
    status: ModelDeploymentStatus
    verdict: Verdict
    events: list[Event] = field(default_factory=list)
