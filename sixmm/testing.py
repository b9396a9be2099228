"""Turning a recording into a regression test of your own code.

Record once (``StreamManager(record="session.jsonl.gz")`` or ``python -m sixmm record``), keep
the file next to your tests, and replay it through your callbacks::

    from sixmm.testing import Collector, run_recording

    def test_strategy_survives_the_outage():
        strategy = MyStrategy()
        seen = Collector()

        def register(streams):
            streams.trades("BTCUSDT", strategy.on_trade)
            streams.order_book("BTCUSDT", strategy.on_book)
            streams.trades("BTCUSDT", seen("trades"))

        streams = run_recording("tests/data/outage.jsonl.gz", register, on_gap=seen("gaps"))
        assert strategy.position == 0
        assert len(seen["gaps"]) == 1
        assert streams.stats()["books"]["BTCUSDT"]["resyncs"] == 1

Replay is deterministic (same file, same calls, same order), needs no network and no
credentials (``user()`` included), and runs as fast as it can. For expected-output fixtures
(recorded frames in, parsed results out), :func:`assert_golden` compares a JSON-able value
with a file and rewrites the file when ``SIXMM_UPDATE_GOLDEN=1``.

As a pytest plugin (``pytest_plugins = ["sixmm.testing"]`` in ``conftest.py``) it adds the
fixture ``sixmm_replay``: :func:`run_recording` with every manager it made stopped at the end.

Thread-safety: :class:`Collector` callbacks may be called from any thread.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Union

from .manager import StreamManager

__all__ = ["Collector", "assert_golden", "run_recording", "to_json"]


class Collector:
    """Named lists of everything callbacks received: ``collect("trades")`` is a callback,
    ``collect["trades"]`` what it got, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: Dict[str, List[Any]] = {}

    def __call__(self, name: str) -> Callable[[Any], None]:
        with self._lock:
            items = self.items.setdefault(name, [])

        def callback(item: Any) -> None:
            with self._lock:
                items.append(item)

        return callback

    def __getitem__(self, name: str) -> List[Any]:
        with self._lock:
            return list(self.items.get(name, ()))


def run_recording(
    path: Union[str, Path],
    register: Callable[[StreamManager], Any],
    *,
    timeout: float = 120.0,
    speed: Any = None,
    **kwargs: Any,
) -> StreamManager:
    """Replay ``path`` through the callbacks ``register(streams)`` sets up; return the stopped
    manager (``stats()`` still works). Raises ``AssertionError`` if the recording is not
    exhausted within ``timeout`` seconds. ``kwargs`` go to :meth:`StreamManager.replay`
    (``on_state``, ``on_error``, ``on_gap``, ``dispatcher``...)."""
    streams = StreamManager.replay(str(path), speed=speed, **kwargs)
    try:
        register(streams)
        streams.start()
        if not streams.wait(timeout):
            raise AssertionError(f"replay of {path} did not finish within {timeout}s")
    finally:
        streams.stop()
    return streams


def to_json(value: Any) -> Any:
    """A JSON-able view of models (their ``raw``), lists and dicts; Decimals as strings."""
    raw = getattr(value, "raw", None)
    if raw is not None:
        return raw
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def assert_golden(value: Any, path: Union[str, Path]) -> None:
    """``value`` (through :func:`to_json`) equals the JSON in ``path``; with
    ``SIXMM_UPDATE_GOLDEN=1`` (or a missing file) the file is (re)written instead."""
    path = Path(path)
    got = to_json(value)
    if os.environ.get("SIXMM_UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        return
    expected = json.loads(path.read_text())
    if got != expected:
        raise AssertionError(
            f"{path}: the replayed output differs from the golden file "
            "(rerun with SIXMM_UPDATE_GOLDEN=1 if the change is intended)"
        )


try:  # the pytest plugin part: only when pytest is there
    import pytest
except ImportError:  # pragma: no cover
    pass
else:

    @pytest.fixture
    def sixmm_replay() -> Iterator[Callable[..., StreamManager]]:
        """:func:`run_recording`, with every manager it made stopped after the test."""
        made: List[StreamManager] = []

        def run(
            path: Union[str, Path], register: Callable[[StreamManager], Any], **kw: Any
        ) -> StreamManager:
            streams = run_recording(path, register, **kw)
            made.append(streams)
            return streams

        yield run
        for streams in made:
            streams.stop()
