"""Drives the kopf handlers the way kopf and the API server would, without either: kopf's own
Patch, Memo and event queue, and status patches merged into the stored body.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import asyncio
import copy

import kopf
from kopf._core.engines import posting

from modeldeploy import handlers
from modeldeploy.reconcile.conditions import condition


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

    def __init__(self, spec: dict, name: str = "churn", namespace: str = "ml"):
        self.raw = {
            "apiVersion": "mlops.modeldeploy.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace, "uid": "u-1", "generation": 1},
            "spec": spec,
        }
        self.memo = kopf.Memo()
        self.events: list[posting.K8sEvent] = []

    @property
    def status(self) -> dict:
        return self.raw.get("status", {})

    def edit_spec(self, change) -> None:
        change(self.raw["spec"])
        self.raw["metadata"]["generation"] += 1

    def call(self, handler) -> kopf.Patch:
        patch = kopf.Patch()

        async def run() -> None:
            queue: asyncio.Queue = asyncio.Queue()
            posting.settings_var.set(kopf.OperatorSettings())
            posting.event_queue_var.set(queue)
            posting.event_queue_loop_var.set(asyncio.get_running_loop())
            await handler(body=kopf.Body(copy.deepcopy(self.raw)), patch=patch, memo=self.memo)
            while not queue.empty():
                self.events.append(queue.get_nowait())

        asyncio.run(run())
        merge(self.raw.setdefault("status", {}), patch.get("status") or {})
        return patch

    def reconcile_until(self, phase: str, limit: int = 12) -> list[str]:
        seen = []
        for _ in range(limit):
            self.call(handlers.reconcile)
            seen.append(self.status["phase"])
            if self.status["phase"] == phase:
                return seen
        raise AssertionError(f"never reached {phase}: {seen}; {self.status.get('message')}")

    def condition(self, ctype: str) -> tuple[str, str]:
        c = condition(self.status["conditions"], ctype)
        return c["status"], c["reason"]
