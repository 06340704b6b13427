"""The `modeldeploy` command: run the operator, train, register, preview a plan."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from modeldeploy import __version__, peering, serving
from modeldeploy.console import run_command
from modeldeploy.gitops import command as decisions

_Subparsers = argparse._SubParsersAction


def _add_run(sub: _Subparsers) -> None:
    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
    run.add_argument("--namespace", "-n", action="append", help="watch only this namespace")
    run.add_argument("--default-provider", choices=["sagemaker", "local"])
    run.add_argument("--liveness", help="e.g. http://0.0.0.0:8080/healthz")
    run.add_argument("--log-level", default="info")
    peering.add_arguments(run)
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    import kopf

    from modeldeploy import handlers  # registers the handlers
    from modeldeploy.kube_login import connection_limit
    from modeldeploy.providers import ProviderFactory

    peers = peering.from_args(args)
    settings = kopf.OperatorSettings()
    peering.configure(settings, peers)
    level = getattr(logging, args.log_level.upper())
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kopf logs every handler call; our Events and status say what matters.
    logging.getLogger("kopf.objects").setLevel(max(level, logging.WARNING))
    if not peers.standalone:  # one replica says nothing about it
        logging.getLogger(__name__).info("high availability: %s", peers.describe())
    asyncio.run(
        kopf.operator(
            settings=settings,
            **peers.operator_kwargs(),  # standalone unless --peering / MODELDEPLOY_PEERING
            clusterwide=not args.namespace,
            namespaces=args.namespace or [],
            liveness_endpoint=args.liveness,
            # What the handlers use, injected once; `handlers.configure` fills in the rest.
            memo=handlers.defaults(
                kopf.Memo(
                    providers=ProviderFactory(args.default_provider),
                    api_connections=connection_limit(args.namespace or ()),
                )
            ),
        )
    )
    return 0


def _add_train(sub: _Subparsers) -> None:
    train = sub.add_parser("train", help="train the seed XGBoost model and package it")
    train.add_argument("--output", "-o", required=True, help="directory to write into")
    train.add_argument(
        "--framework-version",
        help="SageMaker XGBoost image to write for (default: the one matching this xgboost)",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--quiet", action="store_true", help="no progress display")
    train.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from modeldeploy.training.train import train

    result = train(
        Path(args.output),
        framework_version=args.framework_version,
        seed=args.seed,
        progress=not args.quiet,
    )
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(result.metrics.items()))
    print(f"model:           {result.model_tar}")
    print(f"evaluation:      {result.evaluation}")
    print(f"held-out:        {metrics}")
    print(f"written by:      xgboost {result.xgboost_version}")
    print(f"serve it with:   frameworkVersion {result.framework_version}")
    print(f"report:          {result.report or 'skipped: ' + result.report_skipped}")
    return 0


def _add_register(sub: _Subparsers) -> None:
    reg = sub.add_parser("register", help="upload a model.tar.gz to S3 and register a version")
    reg.add_argument("--group", required=True, help="model package group name")
    reg.add_argument("--artifact", required=True, help="path to model.tar.gz")
    reg.add_argument("--metrics", help="path to evaluation.json")
    reg.add_argument("--bucket", required=True, help="S3 bucket to upload into")
    reg.add_argument("--prefix", help="S3 key prefix (default: the group name)")
    reg.add_argument("--region", help="default: AWS_REGION / AWS_DEFAULT_REGION")
    image = reg.add_mutually_exclusive_group()
    image.add_argument("--framework-version", help="first-party XGBoost image version")
    image.add_argument("--image", help="explicit serving image URI")
    reg.set_defaults(func=_register)


def _register(args: argparse.Namespace) -> int:
    from modeldeploy.registration import register_local_files

    arn = register_local_files(
        group=args.group,
        artifact=Path(args.artifact),
        metrics=Path(args.metrics) if args.metrics else None,
        bucket=args.bucket,
        prefix=args.prefix or "",
        region=args.region,
        framework_version=args.framework_version,
        image=args.image,
    )
    print(arn)
    return 0


def _add_plan(sub: _Subparsers) -> None:
    plan = sub.add_parser("plan", help="print what the operator would do; changes nothing")
    plan.add_argument("-f", "--file", required=True, help="ModelDeployment YAML file")
    plan.add_argument("--default-provider", choices=["sagemaker", "local"])
    plan.set_defaults(func=_plan)


def _plan(args: argparse.Namespace) -> int:
    from modeldeploy.preview import preview_file

    return preview_file(Path(args.file), default_provider=args.default_provider)


def _add_report(sub: _Subparsers) -> None:
    report = sub.add_parser(
        "report", help="compare a group's versions: metrics and ROC/PR curves in report.html"
    )
    report.add_argument("--group", required=True, help="model package group name")
    report.add_argument(
        "--versions",
        help="A,B: compare these versions (default: the newest against what production "
        "serves, or else the version before it)",
    )
    report.add_argument("--output", "-o", help="directory to write into (default: reports/GROUP)")
    report.add_argument("--provider", choices=["sagemaker", "local"])
    report.add_argument("--region", help="for sagemaker (default: AWS_REGION)")
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from modeldeploy.report.compare import compare_group, summary

    comparison = compare_group(
        args.group,
        versions=args.versions,
        output=Path(args.output) if args.output else None,
        provider=args.provider,
        region=args.region,
    )
    print("\n".join(summary(comparison)))
    print(comparison.report)
    return 0


def _add_serve(sub: _Subparsers) -> None:
    serve = sub.add_parser("serve", help=serving.HELP)
    serving.add_serve_arguments(serve)
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return serving.serve(args)


def _add_cluster(sub: _Subparsers) -> None:
    cluster = sub.add_parser(
        "cluster", help="a local control plane (etcd + kube-apiserver) for tests and demos"
    )
    cluster.add_argument("action", choices=["up", "down", "status", "kubeconfig", "purge"])
    cluster.add_argument(
        "--state-dir",
        default=os.environ.get("MODELDEPLOY_CLUSTER_DIR", ".cache/cluster"),
        help="certificates, etcd data, logs (default: .cache/cluster)",
    )
    cluster.add_argument(
        "--with-node",
        action="store_true",
        help="up: also a real node (containerd, kubelet, kube-proxy, controllers); needs root",
    )
    cluster.add_argument(
        "--image",
        action="append",
        type=Path,
        default=[],
        metavar="OCI_ARCHIVE",
        help="up --with-node: load this image archive into the node (repeatable)",
    )
    cluster.set_defaults(func=_cluster)


def _cluster(args: argparse.Namespace) -> int:
    from modeldeploy.cluster.command import cluster_command

    return cluster_command(
        args.action, Path(args.state_dir), with_node=args.with_node, images=args.image
    )


def _add_local(sub: _Subparsers) -> None:
    local = sub.add_parser("local", help="the local provider's state directory")
    actions = local.add_subparsers(dest="action", required=True)
    reset = actions.add_parser(
        "reset",
        help="after a lost registry: stop the directory's endpoint servers and start a new "
        "history (version numbers start again at 1)",
    )
    reset.add_argument(
        "--dir",
        help="the local provider's directory (default: MODELDEPLOY_LOCAL_DIR, else "
        "~/.local/share/modeldeploy)",
    )
    reset.add_argument(
        "--force", action="store_true", help="reset even an intact registry (it is set aside)"
    )
    reset.set_defaults(func=_local_reset)


def _local_reset(args: argparse.Namespace) -> int:
    from modeldeploy.providers.local import default_root
    from modeldeploy.providers.local.reset import reset

    print("\n".join(reset(Path(args.dir) if args.dir else default_root(), force=args.force)))
    return 0


def _add_decisions(sub: _Subparsers) -> None:
    # approve | reject | promote | rollback NAME --version N [-f FILE]: decisions as commits
    # (a rewritten manifest) or as server-side apply on the live object; modeldeploy.gitops.
    decisions.add_parsers(sub)


def _add_completion(sub: _Subparsers) -> None:
    completion = sub.add_parser(
        "completion",
        help="print a shell completion script, e.g. `source <(modeldeploy completion bash)`",
    )
    completion.add_argument("shell", choices=["bash", "zsh", "tcsh"])
    completion.set_defaults(func=_completion)


def _completion(args: argparse.Namespace) -> int:
    import shtab  # generates the script from this very parser, so it never goes stale

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


# The subcommands in the order `modeldeploy --help` lists them.
SUBCOMMANDS = (
    _add_run,
    _add_train,
    _add_register,
    _add_plan,
    _add_report,
    _add_serve,
    _add_cluster,
    _add_local,
    _add_decisions,
    _add_completion,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modeldeploy", description="GitOps delivery of bring-your-own XGBoost models."
    )
    parser.add_argument("--version", action="version", version=f"modeldeploy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv), "modeldeploy")


if __name__ == "__main__":
    sys.exit(main())
