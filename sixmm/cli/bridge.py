"""``python -m sixmm bridge``: the Redis Streams bridge (:mod:`sixmm.bus.cli` does the work)."""

from __future__ import annotations

from typing import Any

from ..bus import cli as bus_cli

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``bridge`` (redis-py is imported only when it runs)."""
    bus_cli.register(sub)
    sub.choices["bridge"].set_defaults(run=bus_cli.run)
