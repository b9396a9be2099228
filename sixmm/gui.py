"""One-liners that pump a :class:`~sixmm.dispatch.QueueDispatcher` from a GUI event loop.

Callbacks then run on the GUI thread, where touching widgets is safe::

    inbox = sixmm.QueueDispatcher(conflate=True)
    streams = sixmm.StreamManager(dispatcher=inbox)
    cancel = sixmm.gui.tk_pump(root, inbox)         # Tk
    timer = sixmm.gui.qt_pump(inbox, parent=window)  # Qt (PySide6, PyQt6, PyQt5 or PySide2)

No GUI toolkit is imported by this module until ``qt_pump`` is called.

Both pumps also lower the interpreter's thread switch interval to
:data:`GUI_SWITCH_INTERVAL` (1 ms; ``switch_interval=None`` leaves it alone). CPython gives
the GIL to a thread that waits for it only after the switch interval (5 ms by default), and
not necessarily to that thread. sixmm's readers pause every 4 ms while busy with large frames
(a resync storm: hundreds of snapshots at once), so a GUI thread misses its 10 ms ticks by
up to ~15 ms at either interval, never by more than 20 ms in the runs measured
(``bench/bench_storm.py``). ``sys.setswitchinterval`` is process-wide: it is only ever
lowered, never raised.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Dict, Optional, Protocol

__all__ = ["GUI_SWITCH_INTERVAL", "qt_pump", "tk_pump"]

#: the thread switch interval the pumps set (seconds; see the module docstring)
GUI_SWITCH_INTERVAL = 0.001

_QT_BINDINGS = ("PySide6", "PyQt6", "PyQt5", "PySide2")


class _Drainable(Protocol):
    def drain(self, max_items: Optional[int] = None) -> int: ...


def _prefer_gui_thread(switch_interval: Optional[float]) -> None:
    if switch_interval is not None and sys.getswitchinterval() > switch_interval:
        sys.setswitchinterval(switch_interval)


def tk_pump(
    root: Any,
    dispatcher: _Drainable,
    interval_ms: int = 50,
    max_items: int = 1000,
    switch_interval: Optional[float] = GUI_SWITCH_INTERVAL,
) -> Callable[[], None]:
    """Drain ``dispatcher`` every ``interval_ms`` on Tk's thread via ``root.after``
    (``root``: any Tk widget, or an object with ``after(ms, func)`` / ``after_cancel(id)``).

    Each tick runs at most ``max_items`` messages; when a tick hits that bound the next tick
    comes after 1 ms, so a backlog is worked off without freezing the GUI. Returns a function
    that cancels the pump (idempotent; safe from inside a callback).
    """
    _prefer_gui_thread(switch_interval)
    state: Dict[str, Any] = {"id": None, "cancelled": False}

    def tick() -> None:
        state["id"] = None
        ran = 0
        try:
            ran = dispatcher.drain(max_items)
        finally:
            if not state["cancelled"]:
                state["id"] = root.after(1 if ran >= max_items else interval_ms, tick)

    def cancel() -> None:
        state["cancelled"] = True
        pending, state["id"] = state["id"], None
        if pending is not None:
            root.after_cancel(pending)

    state["id"] = root.after(interval_ms, tick)
    return cancel


def _qtimer_class() -> Any:
    errors = []
    for binding in _QT_BINDINGS:
        try:
            return importlib.import_module(binding + ".QtCore").QTimer
        except ImportError as exc:
            errors.append(f"{binding}: {exc}")
    raise ImportError("qt_pump needs PySide6, PyQt6, PyQt5 or PySide2 (" + "; ".join(errors) + ")")


def qt_pump(
    dispatcher: _Drainable,
    interval_ms: int = 50,
    max_items: int = 1000,
    parent: Any = None,
    switch_interval: Optional[float] = GUI_SWITCH_INTERVAL,
) -> Any:
    """Start and return a ``QTimer`` (child of ``parent``) that drains ``dispatcher`` every
    ``interval_ms`` on the Qt thread. Keep a reference to it when ``parent`` is None;
    ``timer.stop()`` ends the pump. Uses whichever Qt binding is importable."""
    timer = _qtimer_class()(parent)
    _prefer_gui_thread(switch_interval)
    timer.setInterval(interval_ms)
    timer.timeout.connect(lambda: dispatcher.drain(max_items))
    timer.start()
    return timer
