"""The text of `kubectl modeldeploy get`: the view document (`view.py`) drawn for a person.

Sections: the headline (phase and what it waits for), the versions with their approval and key
metrics, each stage's endpoint, the gates and what moves them on, the last Events. Tables are
aligned on the plain text, then coloured, so colour never shifts a column.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import yaml

from modeldeploy.plugin.colour import Palette

# Metrics a reviewer looks at first (SageMaker's model-quality names); at most MAX_METRICS.
KEY_METRICS = ("auc", "accuracy", "f1", "precision", "recall")
MAX_METRICS = 4
QUIET_WHEN_FALSE = ("Reconciling", "Stalled")
PHASE_STYLE = {
    "Deployed": "green",
    "Failed": "red",
    "Rejected": "red",
    "PendingApproval": "yellow",
    "AwaitingPromotion": "yellow",
}


def render_document(view: dict, output: str) -> str:
    if output == "json":
        return json.dumps(view, indent=2) + "\n"
    return yaml.safe_dump(view, sort_keys=False, width=1000)


def render_text(view: dict, palette: Palette, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    p = palette
    lines = [_headline(view, p)]
    lines += _section("VERSIONS", _versions_table(view, p), "none registered yet", p)
    lines += _section("STAGES", _stages_table(view, p), "", p)
    lines += _section("PIPELINE", _pipeline_lines(view, p), "", p)
    lines += _section("GATES", _gates_table(view, p), "no conditions yet", p)
    lines += _section("EVENTS", _events_table(view, p, now), "none", p)
    return "\n".join(lines) + "\n"


def _headline(view: dict, p: Palette) -> str:
    phase = view["phase"] or "Unknown"
    where = f"{view['namespace']}/{view['name']}"
    group = view["modelPackageGroup"] or "-"
    provider = " ".join(x for x in (view["provider"], view["region"]) if x) or "default provider"
    policy, decisions = view["policy"], view["decisions"]
    approval = f"approval {policy['approval']}"
    if decisions["approvedVersion"] is not None:
        approval += f" (approvedVersion {decisions['approvedVersion']})"
    promotion = f"promotion {policy['promotion']}"
    if decisions["promotedVersion"] is not None:
        promotion += f" (promotedVersion {decisions['promotedVersion']})"
    stale = "" if view["upToDate"] else p.yellow("  (the operator has not seen this spec yet)")
    head = [
        f"{p.bold(where)}  {p.paint(phase, PHASE_STYLE.get(phase, 'cyan'))}{stale}",
        f"  {view['message'] or ''}".rstrip(),
        p.dim(f"  group {group} on {provider}; {approval}; {promotion}"),
    ]
    return "\n".join(line for line in head if line.strip())


def _section(title: str, rows: list[str], empty: str, p: Palette) -> list[str]:
    if not rows and not empty:
        return []
    return ["", p.bold(title), *(rows or [f"  {empty}"])]


Cell = tuple[str, str]  # (text, style)


def _table(header: list[str], rows: list[list[Cell]], p: Palette) -> list[str]:
    if not rows:
        return []
    widths = [max(len(h), *(len(r[i][0]) for r in rows)) for i, h in enumerate(header)]
    titles = [
        h.ljust(w) if i < len(header) - 1 else h
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    ]
    out = ["  " + "  ".join(p.dim(t) for t in titles)]
    for row in rows:
        # Padding outside the colour codes, so a line's trailing blanks can be stripped.
        cells = [
            p.paint(text, style) + (" " * (w - len(text)) if i < len(row) - 1 else "")
            for i, ((text, style), w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append(("  " + "  ".join(cells)).rstrip())
    return out


def _metric_names(versions: list[dict]) -> list[str]:
    seen = {name for v in versions for name in v["metrics"]}
    first = [m for m in KEY_METRICS if m in seen]
    rest = sorted(seen - set(first))
    return (first + rest)[:MAX_METRICS]


def _versions_table(view: dict, p: Palette) -> list[str]:
    versions = view["versions"]
    metrics = _metric_names(versions)
    rejected = {r["version"]: r["reason"] for r in view["decisions"]["rejectedVersions"]}
    rows = []
    for v in versions:
        status = v["approvalStatus"] or "-"
        notes = [*v["servedBy"]]
        if v["newest"]:
            notes.insert(0, "newest")
        note = ", ".join(notes)
        why = v["approvalDescription"] or rejected.get(v["version"]) or ""
        rows.append(
            [
                (str(v["version"]), "bold" if v["newest"] else ""),
                (status, _approval_style(status)),
                *((_number(v["metrics"].get(m)), "") for m in metrics),
                (note, "cyan"),
                (why, "dim"),
            ]
        )
    header = ["VERSION", "APPROVAL", *(m.upper() for m in metrics), "WHERE", "DESCRIPTION"]
    return _table(header, rows, p)


def _stages_table(view: dict, p: Palette) -> list[str]:
    rows = []
    for s in view["stages"]:
        if not s["endpointName"] and s["version"] is None:
            rows.append([(s["stage"], "bold"), ("not deployed", "dim"), *[("", "")] * 3])
            continue
        version = "-" if s["version"] is None else str(s["version"])
        if s["targetVersion"] is not None:
            version += f" -> {s['targetVersion']}"
        if s["previousVersion"] is not None:
            version += f" (previous {s['previousVersion']})"
        status = s["endpointStatus"] or "-"
        if s["failureReason"]:
            status += f": {s['failureReason']}"
        rows.append(
            [
                (s["stage"], "bold"),
                (s["endpointName"] or "-", ""),
                (status, _endpoint_style(s["endpointStatus"])),
                (version, ""),
                _smoke(s["smokeTest"]),
            ]
        )
    table = _table(["STAGE", "ENDPOINT", "STATUS", "VERSION", "SMOKE TEST"], rows, p)
    urls = [f"  {s['stage']} url: {s['url']}" for s in view["stages"] if s["url"]]
    return table + [p.dim(u) for u in urls]


def _pipeline_lines(view: dict, p: Palette) -> list[str]:
    """Project mode: the stages in one line, each action that is not plainly done, and the
    last decision at the gate."""
    pipeline = view["pipeline"]
    if not pipeline:
        return []
    run = f" run {pipeline['run']} {pipeline['runStatus']}" if pipeline["run"] else ""
    lines = [f"  {pipeline['name'] or pipeline['project']} ({pipeline['projectStatus']}){run}"]
    steps = [f"{s['name']} {s['status'] or '-'}" for s in pipeline["stages"]]
    if steps:
        lines.append("  " + " -> ".join(steps))
    for stage in pipeline["stages"]:
        for a in stage["actions"]:
            if a["status"] not in (None, "Succeeded"):
                summary = f": {a['summary']}" if a["summary"] else ""
                text = f"    {stage['name']}/{a['name']} {a['status']}{summary}"
                lines.append(p.paint(text, "red" if a["status"] == "Failed" else "yellow"))
    decided = pipeline["lastDecision"]
    if decided:
        lines.append(
            p.dim(
                f"  last gate decision: {decided['decision']} version {decided['version']} "
                f"(run {decided['run']}) by {decided['by']}"
            )
        )
    return lines


def _smoke(smoke: dict | None) -> Cell:
    if not smoke:
        return ("-", "dim")
    latency = smoke["latencyMs"]
    took = f" {latency:.1f} ms" if isinstance(latency, int | float) else ""
    of = f" (v{smoke['version']})" if smoke["version"] is not None else ""
    if smoke["passed"]:
        return (f"passed{took}{of}", "green")
    return (f"failed{took}{of}: {smoke['message'] or ''}".rstrip(": "), "red")


def _gates_table(view: dict, p: Palette) -> list[str]:
    # Reconciling and Stalled are news only when True (kstatus's abnormal-true conditions).
    gates = [
        g for g in view["gates"] if g["type"] not in QUIET_WHEN_FALSE or g["status"] != "False"
    ]
    rows = [
        [
            (g["type"] or "-", "bold"),
            (g["status"] or "-", _condition_style(g["type"], g["status"])),
            (g["reason"] or "", ""),
            (g["message"] or "", ""),
        ]
        for g in gates
    ]
    return _table(["CONDITION", "STATUS", "REASON", "WHAT MOVES IT ON"], rows, p)


def _events_table(view: dict, p: Palette, now: datetime) -> list[str]:
    rows = [
        [
            (_age(e["lastSeen"], now), ""),
            (e["type"] or "", "red" if e["type"] == "Warning" else ""),
            (e["reason"] or "", ""),
            ((e["message"] or "") + (f" (x{e['count']})" if e["count"] > 1 else ""), ""),
        ]
        for e in view["events"]
    ]
    return _table(["AGE", "TYPE", "REASON", "MESSAGE"], rows, p)


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


def _approval_style(status: str) -> str:
    return {"Approved": "green", "Rejected": "red"}.get(status, "yellow")


def _endpoint_style(status: str | None) -> str:
    if status == "InService":
        return "green"
    return "red" if status in ("Failed", "OutOfService") else "yellow"


def _condition_style(kind: str | None, status: str | None) -> str:
    # Reconciling and Stalled are "abnormal-true" (kstatus): True is the news, not the goal.
    if kind == "Stalled":
        return "red" if status == "True" else "dim"
    if kind == "Reconciling":
        return "cyan" if status == "True" else "dim"
    return {"True": "green", "False": "yellow"}.get(status or "", "dim")


def _age(stamp: str | None, now: datetime) -> str:
    if not stamp:
        return "-"
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
