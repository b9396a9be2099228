"""Defence in depth: a ``logging.Filter`` that scrubs credentials from every sixmm log record.

Every server-provided text is scrubbed where it enters sixmm; this filter catches what a
future code path might forget. A filter on a logger does not apply to its children, so
:func:`install` puts it on ``sixmm`` and on every ``sixmm.*`` logger that exists (each module
of the library creates its logger at import; :mod:`sixmm.manager` and the REST client call
:func:`install` after importing theirs). It also goes on ``urllib3.connectionpool``, whose
DEBUG lines show the signed request URL. Idempotent.

Thread-safety: ``install`` may run from any thread; the filter is stateless.
"""

from __future__ import annotations

import logging

from .protocol.redact import scrub

__all__ = ["ScrubFilter", "install"]


class ScrubFilter(logging.Filter):
    """Formats the record's message once, scrubbed; scrubs its exception text too."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: leave it to the handler to report
            return True
        clean = scrub(message)
        if clean != message or record.args:
            record.msg = clean
            record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


_FILTER = ScrubFilter()
#: urllib3 logs each request line at DEBUG, signed query (``signature=...``) included
_THIRD_PARTY = ("urllib3.connectionpool",)


def install() -> None:
    """Attach the filter to ``sixmm`` and every existing ``sixmm.*`` logger (idempotent)."""
    names = ["sixmm", *_THIRD_PARTY] + [
        name for name in list(logging.Logger.manager.loggerDict) if name.startswith("sixmm.")
    ]
    for name in names:
        log = logging.getLogger(name)
        if _FILTER not in log.filters:
            log.addFilter(_FILTER)
