"""``python -m sixmm sandbox ...``: the local exchange (``python -m sixmm.sandbox``'s options)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import SANDBOX_HINT, CliError

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="run the local sandbox exchange (sandbox --help: its options)",
        add_help=False,
        prefix_chars="\0",
    )
    parser.add_argument("args", nargs=argparse.REMAINDER)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        from ..sandbox.__main__ import main as sandbox_main
    except ImportError:
        raise CliError(SANDBOX_HINT, 2) from None
    return sandbox_main(list(args.args))
