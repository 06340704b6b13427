"""`kubectl-modeldeploy`, the kubectl plugin: `kubectl modeldeploy get NAME [--watch]
[-o json|yaml]` and `kubectl modeldeploy approve|reject|promote|rollback NAME ...`.

kubectl runs any `kubectl-<name>` on PATH as `kubectl <name>`, passing the arguments that
follow; this console script is installed beside `modeldeploy` by pip.
"""

from __future__ import annotations

import argparse
import sys

from modeldeploy import __version__
from modeldeploy.console import run_command
from modeldeploy.gitops import command

PROG = "kubectl modeldeploy"


def _get(args: argparse.Namespace) -> int:
    from modeldeploy.gitops.kube import connect
    from modeldeploy.plugin.get import main_get

    kube = connect(args.kubeconfig, args.context, args.namespace)
    return main_get(kube, args.name, args.output, args.watch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Read and decide on ModelDeployments (modeldeploy's kubectl plugin)."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser(
        "get",
        help="one ModelDeployment as a person reads it: versions, stages, gates, Events",
        description="Versions with approval and key metrics, each stage's endpoint, the gates "
        "and what moves them on, and the last Events.",
    )
    get.add_argument("name", help="the ModelDeployment's metadata.name")
    get.add_argument("-n", "--namespace", help="default: the kubeconfig context's namespace")
    get.add_argument("-w", "--watch", action="store_true", help="redraw on change until Ctrl-C")
    get.add_argument(
        "-o", "--output", choices=["json", "yaml"], help="a stable document for scripts"
    )
    command.add_kube_arguments(get)
    get.set_defaults(func=_get)
    command.add_parsers(sub, prog=PROG)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv), PROG)


if __name__ == "__main__":
    sys.exit(main())
