"""`approve | reject | promote | rollback NAME --version N [-f FILE]`: the arguments and the
handler, shared by `modeldeploy` and `kubectl modeldeploy`.

With -f the decision is a rewrite of the manifest, ready to commit; without it, a server-side
apply on the live object (refused on objects that Argo CD or Flux apply from git).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modeldeploy.gitops.decisions import VERBS, Decision, Verb

HELP: dict[Verb, str] = {
    "approve": "approve a version: spec.approval.approvedVersion (and off rejectedVersions)",
    "reject": "reject a version with a reason: an item of spec.approval.rejectedVersions",
    "promote": "promote a version to production: spec.production.promotedVersion",
    "rollback": "set spec.production.promotedVersion back (default: the live "
    "status.production.previousVersion)",
}


def add_parsers(sub: argparse._SubParsersAction, prog: str = "modeldeploy") -> None:
    """The four decision subcommands on `sub`."""
    for verb in VERBS:
        parser = sub.add_parser(verb, help=HELP[verb], description=HELP[verb])
        add_arguments(parser, verb)
        parser.set_defaults(func=lambda args, prog=prog: run(args, prog))


def add_arguments(parser: argparse.ArgumentParser, verb: Verb) -> None:
    parser.add_argument("name", help="the ModelDeployment's metadata.name")
    parser.add_argument(
        "--version",
        type=int,
        required=verb != "rollback",
        help="the model version"
        + (" (default: the live status.production.previousVersion)" if verb == "rollback" else ""),
    )
    if verb == "reject":
        parser.add_argument(
            "--reason", required=True, help="why (1-1024 characters); the registry records it"
        )
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        help="rewrite this manifest in place (a commit to make) instead of the live object",
    )
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    parser.add_argument(
        "--force",
        action="store_true",
        help="change the live object even when Argo CD or Flux applies it from git",
    )
    add_kube_arguments(parser)


def add_kube_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="default: KUBECONFIG, then ~/.kube/config")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")


def run(args: argparse.Namespace, prog: str = "modeldeploy") -> int:
    from modeldeploy.gitops.kube import connect

    verb: Verb = args.command
    version = args.version
    kube = None
    namespace = args.namespace
    if args.file is not None:
        namespace = namespace or _file_namespace(args.file, args.name)
    if version is None or args.file is None:
        kube = connect(args.kubeconfig, args.context, args.namespace)
        namespace = namespace or kube.namespace
    if version is None:  # rollback without --version
        from modeldeploy.gitops.live import previous_version

        assert kube is not None and namespace is not None
        version = previous_version(kube, args.name, namespace)
    decision = Decision(verb, args.name, version, getattr(args, "reason", None))
    if args.file is not None:
        return _in_file(decision, args.file, args.namespace)
    assert kube is not None and namespace is not None
    return _live(decision, kube, namespace, args.force, prog)


def _file_namespace(path: Path, name: str) -> str | None:
    """The namespace written in the file's document for `name`, if one is (for rollback)."""
    from modeldeploy.gitops.manifest import ManifestError, find_document

    try:
        text = path.read_text(encoding="utf-8")
        import yaml

        docs = list(yaml.safe_load_all(text))
        doc = docs[find_document(text, name, None, str(path))]
    except (ManifestError, OSError, ValueError):
        return None  # the rewrite itself says what is wrong
    return (doc.get("metadata") or {}).get("namespace")


def _in_file(decision: Decision, path: Path, namespace: str | None) -> int:
    from modeldeploy.gitops.manifest import rewrite_file

    rewrite = rewrite_file(path, decision, namespace)
    if not rewrite.changed:
        print(f"{path}: {decision.name} already records '{decision.summary()}'; nothing to change")
        return 0
    sys.stdout.write(_colour_diff(rewrite.diff()))
    print(f"wrote {path}: {decision.summary()} of {decision.name}; commit it for review")
    return 0


def _live(decision: Decision, kube, namespace: str, force: bool, prog: str) -> int:
    from modeldeploy.gitops.live import FIELD_MANAGER, apply_decision

    result = apply_decision(kube, decision, namespace, force=force, prog=prog)
    where = f"{namespace}/{decision.name}"
    if result.owner:
        print(
            f"warning: {where} is managed by {result.owner.tool} ({result.owner.evidence}); "
            "it will put back what git says at its next sync unless git says this too",
            file=sys.stderr,
        )
    if not result.changed:
        print(f"{where} already records '{decision.summary()}'; nothing to change")
        return 0
    sys.stdout.write(_colour_diff(result.diff()))
    for taken in result.took_over:
        print(f"took over {taken}")
    print(f"{where}: {decision.summary()} (server-side apply as {FIELD_MANAGER})")
    return 0


def _colour_diff(diff: str) -> str:
    from modeldeploy.plugin.colour import Palette

    palette = Palette.for_stream(sys.stdout)
    out = []
    for line in diff.splitlines(keepends=True):
        if line.startswith(("+++", "---")):
            out.append(palette.bold(line.rstrip("\n")) + "\n")
        elif line.startswith("+"):
            out.append(palette.green(line.rstrip("\n")) + "\n")
        elif line.startswith("-"):
            out.append(palette.red(line.rstrip("\n")) + "\n")
        elif line.startswith("@@"):
            out.append(palette.cyan(line.rstrip("\n")) + "\n")
        else:
            out.append(line)
    return "".join(out)
