"""Continuity of one stream as a consumer reads it: ``(session, seq)`` checks (pure code)."""

from __future__ import annotations

import enum
from typing import Optional

__all__ = ["Cursor", "Verdict"]


class Verdict(enum.Enum):
    """What :meth:`Cursor.check` says about the next entry of a stream."""

    FIRST = "first"
    """The first entry this consumer reads: nothing to compare with."""
    NEXT = "next"
    """Same session, ``seq`` one more than the last: continuous."""
    DUPLICATE = "duplicate"
    """Same session, ``seq`` not above the last: seen already, skip it."""
    HOLE = "hole"
    """Same session, ``seq`` jumped: entries were lost (trimmed, or never written)."""
    NEW_SESSION = "new_session"
    """Another bridge session (restart or failover): books resync, trades are de-duplicated."""


class Cursor:
    """The last ``(session, seq)`` read from one stream.

    Thread-safety: none; the consumer's reader thread owns it.
    """

    __slots__ = ("lost", "seq", "session")

    def __init__(self) -> None:
        self.session: Optional[str] = None
        self.seq = 0
        self.lost = 0  # entries the last HOLE skipped

    def check(self, session: str, seq: int) -> Verdict:
        """Classify the entry ``(session, seq)`` and, unless DUPLICATE, move to it."""
        if self.session is None:
            verdict = Verdict.FIRST
        elif session != self.session:
            verdict = Verdict.NEW_SESSION
        elif seq <= self.seq:
            return Verdict.DUPLICATE
        elif seq == self.seq + 1:
            verdict = Verdict.NEXT
        else:
            self.lost = seq - self.seq - 1
            verdict = Verdict.HOLE
        self.session = session
        self.seq = seq
        return verdict
