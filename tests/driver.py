"""Drives the kopf handlers the way kopf and the API server would, without either: kopf's own
Body, Patch and Memo (with providers and an Event sink injected, as an embedder would), and
status patches merged into the stored body.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import asyncio
import copy
import time

import kopf

from modeldeploy import handlers
from modeldeploy.policy import PolicySource
from modeldeploy.providers import ProviderFactory
from modeldeploy.reconcile.conditions import condition
from modeldeploy.reconcile.types import Event, Timing


def merge(target: dict, patch: dict) -> None:
    """Apply a JSON merge patch (RFC 7386) in place, as the API server does."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


MUTATING = ("Create", "Update", "Delete", "Put", "Add", "Stop", "Start")


class Resource:
    """A ModelDeployment as the API server would hold it, passed through the handlers."""

    def __init__(
        self,
        spec: dict,
        *,
        providers: ProviderFactory,
        name: str = "churn",
        namespace: str = "ml",
        policy: PolicySource | None = None,
    ):
        self.raw = {
            "apiVersion": "mlops.modeldeploy.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace, "uid": "u-1", "generation": 1},
            "spec": spec,
        }
        self.events: list[Event] = []
        self.writes: list[dict] = []  # the status patches written, in order
        self.memo = kopf.Memo(
            providers=providers,
            timing=Timing(),
            policy=policy or PolicySource(),
            post_event=lambda body, event: self.events.append(event),
            status_writer=self,  # status patches merged as the API server would
        )

    def patch(self, body: kopf.Body, status: dict) -> bool:
        """The status writer the handlers call (kube_status.StatusWriter's interface)."""
        self.writes.append(copy.deepcopy(status))
        merge(self.raw.setdefault("status", {}), status)
        return True

    @property
    def status(self) -> dict:
        return self.raw.get("status", {})

    def edit_spec(self, change) -> None:
        change(self.raw["spec"])
        self.raw["metadata"]["generation"] += 1

    def call(self, handler) -> kopf.Patch:
        patch = kopf.Patch()

        body = kopf.Body(copy.deepcopy(self.raw))
        asyncio.run(handler(body=body, patch=patch, memo=self.memo))
        merge(self.raw.setdefault("status", {}), patch.get("status") or {})
        return patch

    def reconcile_until(self, phase: str, limit: int = 12) -> list[str]:
        seen = []
        for _ in range(limit):
            self.call(handlers.on_change)
            seen.append(self.status["phase"])
            if self.status["phase"] == phase:
                return seen
        raise AssertionError(f"never reached {phase}: {seen}; {self.status.get('message')}")

    def settle(self, phase: str, timeout: float = 60) -> dict:
        """Passes every 0.2 s until `phase`, for a provider whose remote moves in real time
        (local servers starting); the status reached."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.call(handlers.on_change)
            if self.status["phase"] == phase:
                return self.status
            time.sleep(0.2)
        raise AssertionError(f"never reached {phase}: {self.status.get('message')}")

    def condition(self, ctype: str) -> tuple[str, str]:
        c = condition(self.status["conditions"], ctype)
        return c["status"], c["reason"]
