"""Carries out a plan's actions through a provider and folds their results into the status.

Terminal errors become a stall record (not retried until the spec changes); transient errors
are returned to the caller, which retries with backoff.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from dataclasses import dataclass, field

from modeldeploy.providers.base import Provider, ProviderError, TerminalError, TransientError
from modeldeploy.reconcile.actions import (
    Action,
    DeleteEndpoint,
    DeployEndpoint,
    EnsureGroup,
    RegisterVersion,
    SetApproval,
    SmokeTest,
    action_key,
)
from modeldeploy.reconcile.conditions import merge_conditions, stalled_conditions, timestamp
from modeldeploy.reconcile.planner import Context, Event, Plan
from modeldeploy.remote import InvokeResult
from modeldeploy.spec import ModelDeploymentSpec

SMOKE_REQUESTS = 3


@dataclass
class Outcome:
    status: dict
    events: list[Event] = field(default_factory=list)
    transient_error: str | None = None


def execute(plan: Plan, provider: Provider, spec: ModelDeploymentSpec, ctx: Context) -> Outcome:
    status = copy.deepcopy(plan.status)
    out = Outcome(status=status, events=list(plan.events))
    for action in plan.actions:
        try:
            _run(action, provider, spec, ctx, out)
        except TransientError as err:
            out.transient_error = f"{type(action).__name__}: {err}"  # the caller posts it
            return out
        except (TerminalError, ProviderError) as err:
            _stall(out, action, str(err), ctx)
            return out
    return out


def _stall(out: Outcome, action: Action, message: str, ctx: Context) -> None:
    reason = {
        RegisterVersion: "RegistrationFailed",
        DeployEndpoint: "DeploymentFailed",
        SetApproval: "ApprovalFailed",
        EnsureGroup: "GroupCreationFailed",
        DeleteEndpoint: "DeletionFailed",
    }.get(type(action), "ActionFailed")
    out.status["stalled"] = {
        "key": action_key(action),
        "generation": ctx.generation,
        "reason": reason,
        "message": message,
        "source": "action",
    }
    text = f"{message} (change the spec to retry)"
    out.status.update(phase="Failed", message=text)
    out.status["conditions"] = merge_conditions(
        out.status.get("conditions"),
        stalled_conditions(reason, text),
        generation=ctx.generation,
        now=ctx.now,
    )
    out.events.append(Event("Warning", reason, message))


def _run(
    action: Action, provider: Provider, spec: ModelDeploymentSpec, ctx: Context, out: Outcome
) -> None:
    status = out.status
    match action:
        case EnsureGroup(name=name):
            arn = provider.ensure_group(spec)
            status.setdefault("modelPackageGroup", {}).update(name=name, arn=arn)
            out.events.append(Event("Normal", "GroupReady", f"model package group {arn}"))
        case RegisterVersion(artifact=artifact):
            version = provider.register_version(spec)
            status["registration"] = {
                "artifact": artifact,
                "frameworkVersion": (spec.model and spec.model.frameworkVersion) or "",
                "image": (spec.model and spec.model.image) or "",
                "version": version.version,
                "arn": version.arn,
                "digest": version.artifact_digest,
            }
            out.events.append(
                Event("Normal", "Registered", f"{artifact} is version {version.version}")
            )
        case SetApproval(version_arn=arn, status=decision, description=text, version=number):
            provider.set_approval(arn, decision, text)
            out.events.append(Event("Normal", decision, f"version {number}: {text}"))
        case DeployEndpoint():
            provider.deploy(action)
            verb = "Updating" if action.update else "Creating"
            out.events.append(
                Event(
                    "Normal",
                    "Promoting" if action.stage == "production" else "DeployingStaging",
                    f"{verb} endpoint {action.endpoint_name} with version {action.version} "
                    f"({action.config_name})",
                )
            )
        case SmokeTest():
            _smoke_test(action, provider, ctx, out)
        case DeleteEndpoint(endpoint_name=name):
            provider.delete_endpoint(name)
            out.events.append(Event("Normal", "DeletingEndpoint", f"deleting endpoint {name}"))


def _smoke_test(action: SmokeTest, provider: Provider, ctx: Context, out: Outcome) -> None:
    record = {
        "version": action.version,
        "configName": action.config_name,
        "generation": ctx.generation,
        "at": timestamp(ctx.now),
    }
    try:
        # A first request after a cold start may be slow: every answer must hold the right
        # predictions, and the fastest of a few requests is held against maxLatencyMs.
        results = [
            provider.invoke(action.endpoint_name, action.payload, action.content_type)
            for _ in range(SMOKE_REQUESTS)
        ]
    except TransientError:
        raise
    except ProviderError as err:
        record.update(passed=False, message=f"the endpoint refused the payload: {err}")
    else:
        fastest = min(r.latency_ms for r in results)
        record["latencyMs"] = round(fastest, 1)
        problem = next((p for r in results if (p := _check_predictions(r, action.payload))), "")
        if not problem and fastest > action.max_latency_ms:
            problem = f"latency {fastest:.0f} ms exceeds maxLatencyMs {action.max_latency_ms}"
        record.update(passed=not problem, message=problem or "predictions returned")
    out.status.setdefault("staging", {})["smokeTest"] = record
    if record["passed"]:
        out.events.append(
            Event(
                "Normal",
                "SmokeTestPassed",
                f"version {action.version} answered in {record['latencyMs']} ms",
            )
        )


def _check_predictions(result: InvokeResult, payload: str) -> str:
    """Return a problem description, or "" when the body holds one number per payload row."""
    rows = [line for line in payload.splitlines() if line.strip()]
    text = result.body.decode("utf-8", "replace").strip()
    try:
        if result.content_type.startswith("application/json"):
            doc = json.loads(text)
            values = [p["score"] if isinstance(p, dict) else p for p in doc["predictions"]]
        else:
            values = [cell for row in csv.reader(io.StringIO(text)) for cell in row if cell]
        scores = [float(v) for v in values]
    except (ValueError, KeyError, TypeError):
        return f"the response is not a list of predictions: {text[:120]!r}"
    if len(scores) != len(rows):
        return f"expected {len(rows)} predictions, got {len(scores)}"
    return ""
