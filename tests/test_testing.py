"""``sixmm.testing``: a recording as a regression test of the user's code."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List

import pytest

from sixmm import Backoff, StreamManager
from sixmm.sandbox import Sandbox
from sixmm.testing import Collector, assert_golden, run_recording
from sixmm.testing import sixmm_replay as sixmm_replay  # the plugin's fixture

from .helpers import wait_until


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "gap.jsonl"
    trades: List[Any] = []
    with (
        Sandbox(port=0, seed=21) as sb,
        StreamManager(sb.ws_url, record=str(path), backoff=Backoff(initial=0.05, maximum=0.2)) as s,
    ):
        book = s.order_book("BTCUSDT")
        s.trades("BTCUSDT", trades.append)
        assert book.wait_synced(10)
        sb.skip_versions("BTCUSDT", 2)
        wait_until(lambda: s.stats()["books"]["BTCUSDT"]["resyncs"] >= 1 and book.synced)
        wait_until(lambda: len(trades) >= 10)
    return path


class Strategy:
    """A user's code: trades only while the book is synced."""

    def __init__(self) -> None:
        self.book: Any = None
        self.acted = 0
        self.refused = 0

    def on_trade(self, trade: Any) -> None:
        if self.book is not None and self.book.synced:
            self.acted += 1
        else:
            self.refused += 1


def test_run_recording_and_collector(recording: Path, tmp_path: Path) -> None:
    strategy = Strategy()
    seen = Collector()

    def register(streams: StreamManager) -> None:
        strategy.book = streams.order_book("BTCUSDT")
        streams.trades("BTCUSDT", strategy.on_trade)
        streams.trades("BTCUSDT", seen("trades"))

    streams = run_recording(recording, register, on_gap=seen("gaps"))
    assert streams.stats()["books"]["BTCUSDT"]["resyncs"] >= 2  # the gap, then the final close
    assert strategy.acted + strategy.refused == len(seen["trades"]) > 0
    golden = tmp_path / "trades.json"
    assert_golden(seen["trades"], golden)  # first run writes the file
    again = Collector()
    run_recording(recording, lambda s: s.trades("BTCUSDT", again("trades")))
    assert_golden(again["trades"], golden)  # deterministic: the same output
    with pytest.raises(AssertionError, match="differs from the golden file"):
        assert_golden(again["trades"][1:], golden)


def test_the_pytest_fixture(recording: Path, sixmm_replay: Callable[..., StreamManager]) -> None:
    seen = Collector()
    streams = sixmm_replay(recording, lambda s: s.order_book("BTCUSDT", seen("book")))
    assert seen["book"] and streams.stats()["replay"]["finished"]
