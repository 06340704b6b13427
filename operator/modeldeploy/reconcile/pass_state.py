"""The state one planning pass shares between its steps, instead of closures over locals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modeldeploy.reconcile.actions import Action
from modeldeploy.reconcile.conditions import Conditions
from modeldeploy.reconcile.types import Context, Event, Timing
from modeldeploy.remote import Endpoint, ModelVersion, Observed
from modeldeploy.spec import ModelDeploymentSpec
from modeldeploy.status import GroupStatus, ModelDeploymentStatus, StallStatus

if TYPE_CHECKING:  # the steps' results, filled in as the pass goes
    from modeldeploy.reconcile.gates import Promotion
    from modeldeploy.reconcile.smoke import Smoke
    from modeldeploy.reconcile.stages import StageOutcome


@dataclass
class PassState:
    spec: ModelDeploymentSpec
    old: ModelDeploymentStatus  # as read; never changed
    observed: Observed
    ctx: Context
    timing: Timing
    new: ModelDeploymentStatus  # the status this pass writes
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    conds: Conditions = field(default_factory=Conditions)
    # A terminal failure of an action in this generation: that action is held back.
    held: StallStatus | None = None
    candidate: ModelVersion | None = None  # the newest approved version: staging serves it
    staging: StageOutcome | None = None
    smoke: Smoke | None = None
    promotion: Promotion | None = None
    production: StageOutcome | None = None

    @classmethod
    def start(
        cls,
        spec: ModelDeploymentSpec,
        old: ModelDeploymentStatus,
        observed: Observed,
        ctx: Context,
        timing: Timing,
    ) -> PassState:
        # Parts are shared with `old`, never changed in place: steps replace what they change.
        new = ModelDeploymentStatus(
            modelPackageGroup=GroupStatus(
                name=spec.modelPackageGroup.name,
                arn=observed.group_arn or "",
                owner=observed.group_owner or None,
            ),
            registration=old.registration,
            latestVersion=old.latestVersion,
            versions=old.versions,
            staging=old.staging,
            production=old.production,
            project=old.project,
        )
        stalled = old.stalled
        # A stall about a whole pass (the spec, unreadable remote state, the platform policy) is
        # judged afresh; one about an input holds until the spec changes.
        if stalled and (stalled.key == "spec" or stalled.rejudged):
            stalled = None
        if stalled and stalled.holds(ctx.generation):
            new.stalled = stalled
        held = stalled if stalled and stalled.source == "action" else None
        if held and not held.holds(ctx.generation):
            held = None
        return cls(spec, old, observed, ctx, timing, new, held=held)

    def endpoint(self, stage: str) -> Endpoint | None:
        return self.observed.staging if stage == "staging" else self.observed.production

    def stalled_on(self, key: str) -> StallStatus | None:
        """The recorded stall for `key` if it still holds (same input, same generation)."""
        stalled = self.old.stalled
        if stalled and stalled.key == key and stalled.holds(self.ctx.generation):
            return stalled
        return None

    def version(self, number: int | None) -> ModelVersion | None:
        return self.observed.version(number)
