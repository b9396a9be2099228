"""Where user callbacks run: error isolation, timing, and three dispatchers.

:class:`Invoker` calls user callbacks (one ``try/except`` per call, timing, per-topic stats).
A :class:`Dispatcher` decides *where* the invoker runs:

* :class:`InlineDispatcher` -- on the connection's reader thread (fastest; a slow callback
  delays that connection).
* :class:`WorkerDispatcher` -- one worker thread per lane (connection); the reader never runs
  user code; order per lane kept; bounded queue, default overflow policy ``"block"``.
* :class:`QueueDispatcher` -- only on the thread that calls :meth:`QueueDispatcher.drain` (GUIs);
  bounded queue, default overflow policy ``"drop"`` (reported), optional conflation.

Overflow is never silent: every dropped message is counted in ``stats()``, logged (WARNING, at
most once per second per lane) and reported to ``on_error`` as :class:`~sixmm.errors.QueueOverflow`
(at most once per second per lane, one report per topic with the accumulated count), from the
thread that runs callbacks -- the reader thread never runs user code for a queued dispatcher.

Modules: ``invoker`` (the Invoker), ``inbox`` (the bounded queue), ``dispatchers``.
Loggers live under ``sixmm.dispatch``.
"""

from __future__ import annotations

from sixmm.dispatch.dispatchers import (
    OVERFLOW_BLOCK,
    OVERFLOW_DROP,
    Dispatcher,
    InlineDispatcher,
    QueueDispatcher,
    WorkerDispatcher,
)
from sixmm.dispatch.invoker import Callback, Invoker

__all__ = [
    "OVERFLOW_BLOCK",
    "OVERFLOW_DROP",
    "Callback",
    "Dispatcher",
    "InlineDispatcher",
    "Invoker",
    "QueueDispatcher",
    "WorkerDispatcher",
]
