"""`python -m modeldeploy.serving --model PATH [--port N] [--host H] [--workers W]`."""

from __future__ import annotations

import argparse
import sys

from modeldeploy.serving import HELP, add_serve_arguments, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modeldeploy.serving", description=HELP)
    add_serve_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
