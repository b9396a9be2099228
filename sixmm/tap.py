"""The seam through which a connection shows what crossed its socket (recording, tracing).

A :class:`Tap` sees every data frame received and every text frame sent on every connection,
and every open, close and failed connect with its reason. It is called on the connection's
own threads and must never block: a recorder queues and returns. Texts and URLs may carry
credentials (a listenKey in the URL, a server echoing a token): a tap that stores them passes
them through :func:`sixmm.protocol.redact.scrub` first.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Tap"]


class Tap(Protocol):
    """What a connection reports to its tap (all methods must return quickly)."""

    def opened(self, conn: str, url: str) -> None:
        """A socket to ``url`` is open (the upgrade succeeded)."""

    def received(self, conn: str, payload: bytes) -> None:
        """One complete inbound data message."""

    def sent(self, conn: str, text: str) -> None:
        """One outbound text message, as sent."""

    def closed(self, conn: str, reason: str) -> None:
        """The open socket is gone, for ``reason``."""

    def connect_failed(self, conn: str, reason: str) -> None:
        """An attempt to connect failed before the socket opened."""
