"""`modeldeploy plan`: what the operator's next pass would do, without doing it.

Reads only: the same observe() the operator runs, from providers built read-only (the local
provider then reports its endpoints without supervising them), then the pure planner. Meant
for a pull request: run it against the manifest you are about to merge.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from modeldeploy.providers import ProviderFactory
from modeldeploy.reconcile.actions import describe
from modeldeploy.reconcile.controller import context
from modeldeploy.reconcile.planner import plan
from modeldeploy.spec import SpecError, parse_spec
from modeldeploy.status import parse_status

KIND = "ModelDeployment"


def preview_file(path: Path, default_provider: str | None = None) -> int:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == KIND]
    if not docs:
        print(f"{path}: no {KIND} resources found")
        return 1
    providers = ProviderFactory(default=default_provider, read_only=True)
    failed = 0
    for doc in docs:
        failed += preview(doc, providers)
    return 1 if failed else 0


def preview(doc: dict, providers: ProviderFactory) -> int:
    meta = doc.get("metadata") or {}
    namespace, name = meta.get("namespace", "default"), meta.get("name", "<unnamed>")
    print(f"{KIND} {namespace}/{name}")
    try:
        spec = parse_spec(doc.get("spec") or {}).with_default_provider(providers.default)
        provider = providers.get(spec)
    except SpecError as err:
        print(f"  invalid: {err}")
        return 1
    status = parse_status(doc.get("status"))
    ctx = context({**doc, "metadata": {**meta, "name": name}})
    hint = status.observe_hint(spec, ctx.owner)
    observed = provider.observe(spec, hint, namespace=namespace, name=name)
    result = plan(spec, status, observed, ctx)
    print(f"  provider:  {spec.provider}" + (f" ({spec.region})" if spec.region else ""))
    latest = observed.latest
    print(
        "  remote:    "
        + (f"group {observed.group_arn}" if observed.group_arn else "group does not exist yet")
        + (f"; latest version {latest.version} {latest.approval_status}" if latest else "")
    )
    for stage, endpoint in (("staging", observed.staging), ("production", observed.production)):
        if endpoint:
            why = f" ({endpoint.failure_reason})" if endpoint.failure_reason else ""
            print(f"  {stage + ':':<10} {endpoint.name} {endpoint.status}{why}")
    if result.actions:
        print("  next pass would:")
        for n, action in enumerate(result.actions, 1):
            print(f"    {n}. {describe(action)}")
    else:
        print("  next pass would change nothing")
    print(f"  phase:     {result.verdict.phase}: {result.verdict.message}")
    return 0
