"""Pacing of repeated failure reports: the first, on a change of reason, then every N-th.

Pure bookkeeping (no clock, no thread). Thread-safety: not thread-safe; one owner each.
"""

from __future__ import annotations

import re
from typing import Optional

from .config import DEFAULT_REPORT_PACING, ReportPacing

__all__ = ["Pacer"]

_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


class Pacer:
    """Decides which of a run of failures is reported (see :class:`~sixmm.config.ReportPacing`).

    Reasons are compared with their numbers masked, so "retry in 0.41s" and "retry in 0.83s"
    or two request ids count as the same reason.
    """

    def __init__(self, pacing: ReportPacing = DEFAULT_REPORT_PACING) -> None:
        self._every = pacing.every
        self._last: Optional[str] = None
        self.count = 0  # failures in the current run

    def should_report(self, reason: str) -> bool:
        """Count one failure; True when this one should be reported."""
        shape = _NUMBERS.sub("#", reason)
        self.count += 1
        if shape != self._last:
            self._last = shape
            return True
        return self.count % self._every == 1 if self._every > 1 else True

    def reset(self) -> None:
        """A success ended the run of failures."""
        self._last = None
        self.count = 0
