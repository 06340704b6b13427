"""Drives the kopf handlers the way kopf and the API server would, without either: kopf's own
Patch, Memo and event queue, and status patches merged into the stored body.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from kopf._core.engines import posting

from modeldeploy import handlers, naming
from modeldeploy.reconcile.actions import DeployEndpoint
from modeldeploy.reconcile.conditions import condition
from modeldeploy.remote import ModelVersion


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


@contextmanager
def recorded(*clients) -> Iterator[list[str]]:
    """Names of the API calls the clients make, from botocore's own event hook (no mock)."""
    calls: list[str] = []

    def hook(model, **_: object) -> None:
        calls.append(model.name)

    events = []
    for client in clients:
        event = f"before-call.{client.meta.service_model.service_id.hyphenize()}.*"
        client.meta.events.register(event, hook)
        events.append((client, event))
    try:
        yield calls
    finally:
        for client, event in events:
            client.meta.events.unregister(event, hook)


def deploy_action(
    version: ModelVersion,
    endpoint: str,
    *,
    stage: str = "staging",
    instance_type: str = "ml.m5.large",
    count: int = 1,
    capture: int = 0,
    dest: str | None = None,
    config_name: str | None = None,
) -> DeployEndpoint:
    """The action the planner would emit to put `version` on `endpoint`."""
    content = {
        "version": version.arn,
        "instanceType": instance_type,
        "instanceCount": count,
        "dataCapturePercent": capture,
    }
    return DeployEndpoint(
        stage=stage,  # type: ignore[arg-type]
        endpoint_name=endpoint,
        config_name=config_name or naming.config_name(endpoint, content),
        model_name="",
        version=version.version,
        version_arn=version.arn,
        image="",
        artifact="",
        instance_type=instance_type,
        instance_count=count,
        data_capture_percent=capture,
        data_capture_destination=dest,
    )
