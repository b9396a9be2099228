"""``python -m sixmm`` and the ``sixmm`` console script.

The command line may print; the library never does. Every command ends with exit status 0 when
it did what was asked, 2 on bad input, 1 when it could not (no connection within
``--connect-within``, a refused subscription, the stream ended) -- always with one line on
stderr saying why.

Adding a subcommand: write a module with ``register(subparsers)`` that adds its parser with
:func:`sixmm.cli.common.add_command` and sets ``run=function(args) -> exit status`` on it (see
``sixmm/cli/stream.py``), then add the module's name to :data:`COMMANDS`. Import optional
dependencies inside ``run``, not at module level, so ``--help`` works without them.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Optional, Sequence

from .common import CliError, OneLineParser, one_line

__all__ = ["COMMANDS", "main"]

#: The subcommand modules, in ``--help`` order. Each has ``register(subparsers)``.
COMMANDS = [
    "sixmm.cli.views",  # demo, book
    "sixmm.cli.stream",  # stream
    "sixmm.cli.sandbox",  # sandbox
    "sixmm.cli.record",  # record, replay, doctor
    "sixmm.cli.bridge",  # bridge (the Redis Streams bus)
]


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m sixmm",
        description="sixmm: dependable 6MM WebSocket streams for threads, scripts and GUIs.",
    )
    parser.add_argument(
        "--log-level",
        default="ERROR",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="level of sixmm's own logs on stderr (default ERROR: what the command reports"
        " itself is not logged twice; WARNING adds the library's warnings)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``python -m sixmm`` and the ``sixmm`` console script."""
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sixmm")
    root.addHandler(handler)
    root.setLevel(args.log_level)
    try:
        status: int = args.run(args)
        return status
    except CliError as exc:
        print(f"sixmm: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a SixMMError or a bug: one line, not a traceback
        logging.getLogger("sixmm.cli").debug("%s failed", args.command, exc_info=True)
        print(f"sixmm: {one_line(exc)}", file=sys.stderr)
        return 1
