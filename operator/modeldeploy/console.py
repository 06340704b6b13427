"""What both console scripts (`modeldeploy`, `kubectl-modeldeploy`) do with a parsed command."""

from __future__ import annotations

import argparse
import logging
import sys


def run_command(args: argparse.Namespace, prog: str) -> int:
    """Run the subcommand `args.func`: Ctrl-C exits 130, and a failure prints one clear line,
    `PROG COMMAND: error` (as kubectl does), not a traceback, unless logging is at DEBUG."""
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            raise
        print(f"{prog} {args.command}: {err}", file=sys.stderr)
        return 1
