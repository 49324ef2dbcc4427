"""The ``natv2`` command line: a thin shell over ``natv2.pipeline`` stages and user helpers.

Every command takes ``--config PATH`` (default ``config/config.yaml``). A user error (bad config,
missing file, ...) is printed as one line on stderr and the exit code is 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from natv2.config import DEFAULT_CONFIG_PATH, load_config
from natv2.errors import UserError

EXIT_USER_ERROR = 2


def _check_config(args: argparse.Namespace) -> None:
    cfg = load_config(args.config)
    print(f"{args.config}: valid (dataset {cfg['data']['name']}, family {cfg['supernet']['family']})")


def _supernet(args: argparse.Namespace) -> None:
    from natv2.pipeline.supernet_stage import run_supernet

    info = run_supernet(load_config(args.config))
    top1 = info["val_top1"]
    print(f"supernet: {info['family']} w{info['width_mult']} ready in {info['seconds']:.0f} s; "
          f"val top-1 largest {top1['largest']:.2f}%, smallest {top1['smallest']:.2f}%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="natv2", description="NATv2 neural architecture transfer.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], None], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="YAML config (default: %(default)s)")
        p.set_defaults(func=func)
        return p

    command("check-config", _check_config, "validate a config and print a one-line summary")
    command("supernet", _supernet, "stage 1: train, download or load the super-network")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"natv2 {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"natv2 {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
