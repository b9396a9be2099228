"""sixmm.gui.qt_pump with a real Qt event loop (PySide6, offscreen): callbacks on Qt's thread."""

from __future__ import annotations

import os
import threading
from typing import Any, List

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtCore = pytest.importorskip(
    "PySide6.QtCore", reason="the Qt test needs the test-qt extra: pip install -e '.[test-qt]'"
)

import sixmm  # noqa: E402
from sixmm.sandbox import Sandbox  # noqa: E402


def test_qt_pump_delivers_on_the_qt_thread(sandbox: Sandbox) -> None:
    app = QtCore.QCoreApplication.instance() or QtCore.QCoreApplication([])
    inbox = sixmm.QueueDispatcher(conflate=True)
    trades: List[str] = []
    books: List[Any] = []

    def on_trade(trade: Any) -> None:
        trades.append(threading.current_thread().name)

    timer = sixmm.gui.qt_pump(inbox, interval_ms=20)
    with sixmm.StreamManager(sandbox.ws_url, dispatcher=inbox) as streams:
        streams.trades("BTCUSDT", on_trade)
        streams.order_book("ETHUSDT", on_update=books.append)

        def check() -> None:
            if len(trades) >= 5 and books:
                app.quit()

        watcher = QtCore.QTimer()
        watcher.timeout.connect(check)
        watcher.start(20)
        QtCore.QTimer.singleShot(10_000, app.quit)  # a bound, should the stream not come
        app.exec()
        watcher.stop()
        timer.stop()
    assert len(trades) >= 5 and books
    assert set(trades) == {threading.main_thread().name}
    assert books[-1].symbol == "ETHUSDT"
