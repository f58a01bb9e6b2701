"""The ``labelloop`` command: one subcommand per program, each a thin shell around ``main(cfg)``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelloop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the library end to end on scikit-learn's digits")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(func=_demo)
    from experiments.db_cli import add_db_parser
    add_db_parser(sub)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from experiments.demo import DemoConfig, main as demo_main

    demo_main(DemoConfig(seed=args.seed))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
