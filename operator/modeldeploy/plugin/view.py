"""One ModelDeployment and its Events as the document `kubectl modeldeploy get` shows.

The document is the plugin's stable interface (`-o json|yaml`, schema `SCHEMA`): every key is
always present (null or empty when unknown), in a fixed order, so a script can rely on it
whatever the operator has written so far. The text view (`render.py`) draws only from it.
It reads the raw object, not the operator's typed status: a plugin may meet a status written
by an older or newer operator, and shows what is there.
"""

from __future__ import annotations

from typing import Any

SCHEMA = "modeldeploy.dev/get/v1"
STAGES = ("staging", "production")
# Conditions in the order a person reads the pipeline; others follow, as written.
CONDITION_ORDER = (
    "Ready",
    "Registered",
    "Approved",
    "StagingReady",
    "ProductionReady",
    "Reconciling",
    "Stalled",
)
MAX_EVENTS = 10


def build_view(obj: dict, events: list[dict]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    approval = spec.get("approval") or {}
    production = spec.get("production") or {}
    stages = [_stage(name, status.get(name) or {}) for name in STAGES]
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    return {
        "schema": SCHEMA,
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "generation": generation,
        "observedGeneration": observed,
        # False while the operator has not yet looked at the latest spec.
        "upToDate": generation is not None and generation == observed,
        "phase": status.get("phase"),
        "message": status.get("message"),
        "provider": spec.get("provider"),
        "region": spec.get("region"),
        "modelPackageGroup": (spec.get("modelPackageGroup") or {}).get("name"),
        "policy": {
            "approval": approval.get("policy", "Manual"),
            "promotion": production.get("promotion", "Manual"),
        },
        "decisions": {
            "approvedVersion": approval.get("approvedVersion"),
            "rejectedVersions": [
                {"version": r.get("version"), "reason": r.get("reason")}
                for r in approval.get("rejectedVersions") or []
            ],
            "promotedVersion": production.get("promotedVersion"),
        },
        "versions": _versions(status, stages),
        "stages": stages,
        # Project mode: the project's pipeline as status mirrors it; null in direct mode.
        "pipeline": _pipeline(status.get("project")),
        "gates": _gates(status.get("conditions") or []),
        "events": _events(events),
    }


def _versions(status: dict, stages: list[dict]) -> list[dict]:
    rows = status.get("versions")
    if not rows and status.get("latestVersion"):
        rows = [status["latestVersion"]]  # an operator that writes only the newest
    latest = (status.get("latestVersion") or {}).get("version")
    out = []
    for row in sorted(rows or [], key=lambda r: r.get("version") or 0, reverse=True):
        number = row.get("version")
        out.append(
            {
                "version": number,
                "approvalStatus": row.get("approvalStatus"),
                "approvalDescription": row.get("approvalDescription"),
                "metrics": dict(sorted((row.get("metrics") or {}).items())),
                "newest": number is not None and number == latest,
                "servedBy": [s["stage"] for s in stages if s["version"] == number],
            }
        )
    return out


def _stage(name: str, raw: dict) -> dict:
    smoke = raw.get("smokeTest")
    return {
        "stage": name,
        "endpointName": raw.get("endpointName"),
        "endpointStatus": raw.get("endpointStatus"),
        "version": raw.get("version"),
        # A deployment in flight: the version the endpoint moves to.
        "targetVersion": raw.get("targetVersion")
        if raw.get("targetVersion") != raw.get("version")
        else None,
        "url": raw.get("url"),
        "failureReason": raw.get("failureReason"),
        "previousVersion": raw.get("previousVersion") if name == "production" else None,
        "smokeTest": None
        if not smoke
        else {
            "passed": smoke.get("passed"),
            "latencyMs": smoke.get("latencyMs"),
            "version": smoke.get("version"),
            "at": smoke.get("at"),
            "message": smoke.get("message"),
        },
    }


def _pipeline(project: dict | None) -> dict | None:
    if not project:
        return None
    gate = project.get("gate") or {}
    return {
        "project": project.get("name"),
        "projectStatus": project.get("status"),
        "name": project.get("pipeline"),
        "run": (project.get("execution") or {}).get("id"),
        "runStatus": (project.get("execution") or {}).get("status"),
        "stages": [
            {
                "name": stage.get("name"),
                "status": stage.get("status"),
                "actions": [
                    {"name": a.get("name"), "status": a.get("status"), "summary": a.get("summary")}
                    for a in stage.get("actions") or []
                ],
            }
            for stage in project.get("stages") or []
        ],
        "lastDecision": None
        if not gate
        else {
            "run": gate.get("executionId"),
            "version": gate.get("version"),
            "decision": gate.get("decision"),
            "by": gate.get("by"),
        },
    }


def _gates(conditions: list[dict]) -> list[dict]:
    def rank(c: dict) -> int:
        kind = c.get("type")
        return CONDITION_ORDER.index(kind) if kind in CONDITION_ORDER else len(CONDITION_ORDER)

    return [
        {
            "type": c.get("type"),
            "status": c.get("status"),
            "reason": c.get("reason"),
            "message": c.get("message"),
            "lastTransitionTime": c.get("lastTransitionTime"),
        }
        for c in sorted(conditions, key=rank)
    ]


def event_time(event: dict) -> str:
    """When an Event was last seen, whichever API wrote it (core/v1 or events.k8s.io)."""
    series = event.get("series") or {}
    return (
        event.get("lastTimestamp")
        or series.get("lastObservedTime")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _order(event: dict) -> tuple[str, int]:
    # Timestamps have whole seconds, and a pass posts several Events in one: within a second,
    # the order the API server stored them in (resourceVersion, a number on etcd).
    version = (event.get("metadata") or {}).get("resourceVersion") or ""
    return event_time(event), int(version) if version.isdigit() else 0


def _events(events: list[dict]) -> list[dict]:
    # Oldest first, as `kubectl describe` lists them; the last ones are the ones that matter.
    ordered = sorted(events, key=_order)[-MAX_EVENTS:]
    return [
        {
            "type": e.get("type"),
            "reason": e.get("reason"),
            "message": e.get("message") or e.get("note"),
            "count": e.get("count") or (e.get("series") or {}).get("count") or 1,
            "lastSeen": event_time(e) or None,
        }
        for e in ordered
    ]
