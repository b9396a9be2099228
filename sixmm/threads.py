"""The one way sixmm owns a thread: named, started once, stopped within a bound, never joined
by itself.

The connection readers, the heartbeat, the listenKey keeper, the dispatcher's workers, the
bus reader and writer, the recorder's writer and the replay driver are each an
:class:`OwnedThread` held by exactly one owner, which calls :meth:`~OwnedThread.start` and
:meth:`~OwnedThread.stop` (the manager's one-shot stop helper is a plain thread on purpose:
it exists only for the length of one ``stop()``).

``stop`` sets the shared ``stopping`` event (the thread's loop watches it, or waits on it
instead of sleeping), wakes the thread, and joins it for at most ``timeout`` seconds --
unless it is called on the thread itself (a user callback calling ``manager.stop()``), where
joining would deadlock.

Thread-safety: ``start``/``stop``/``alive`` from any thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

__all__ = ["OwnedThread"]

logger = logging.getLogger(__name__)


class OwnedThread:
    """A daemon thread named ``name`` that runs ``target()`` once.

    ``stopping`` is set by :meth:`stop`; ``wake`` is set with it (and by the owner whenever
    the thread should look again) so a thread waiting on ``wake`` returns at once.
    """

    def __init__(self, name: str, target: Callable[[], None]) -> None:
        self.name = name
        self._target = target
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> bool:
        """Start the thread; False if it was already started or stopped (idempotent)."""
        with self._lock:
            if self._thread is not None or self.stopping.is_set():
                return False
            self._thread = threading.Thread(target=self._target, name=self.name, daemon=True)
            self._thread.start()  # under the lock: stop() never sees an unstarted thread
            return True

    def stop(self, timeout: float = 5.0, *, join: bool = True, busy: str = "") -> bool:
        """Ask the thread to end and join it within ``timeout`` (never from itself). True if
        the thread is gone (or never ran); a thread still alive after the bound is logged
        (with ``busy``: what it is likely still doing)."""
        self.stopping.set()
        self.wake.set()
        with self._lock:
            thread = self._thread
        if thread is None:
            return True
        if not join or thread is threading.current_thread():
            return not thread.is_alive()
        thread.join(max(0.0, timeout))
        if thread.is_alive():
            if timeout > 0:
                why = f" ({busy})" if busy else ""
                logger.warning("thread %s did not stop within %.1fs%s", self.name, timeout, why)
            return False
        return True

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def is_current(self) -> bool:
        """True when called on this thread."""
        return self._thread is threading.current_thread()

    def __repr__(self) -> str:
        state = "running" if self.alive else ("stopped" if self.stopping.is_set() else "new")
        return f"<OwnedThread {self.name} {state}>"
