"""Dispatch: error isolation, ordering, where callbacks run, overflow, conflation, stop safety."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.dispatch import (
    Dispatcher,
    InlineDispatcher,
    Invoker,
    QueueDispatcher,
    WorkerDispatcher,
)
from sixmm.errors import CallbackError, QueueOverflow
from sixmm.gui import qt_pump, tk_pump
from tests.helpers import Recorder, wait_until

LOGGER = "sixmm.dispatch"


class Gate:
    """A callback that records its argument, then blocks until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.items: List[Any] = []

    def __call__(self, item: Any) -> None:
        self.items.append(item)
        self.entered.set()
        assert self.opened.wait(10), "gate never opened"


def overflow_total(errors: List[BaseException]) -> int:
    return sum(e.dropped for e in errors if isinstance(e, QueueOverflow))


@pytest.fixture(autouse=True)
def _keep_switch_interval() -> Iterator[None]:
    """The GUI pumps lower the interpreter's switch interval: put it back after each test."""
    import sys

    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


@pytest.fixture
def errors() -> Recorder:
    return Recorder()


@pytest.fixture
def invoker(errors: Recorder) -> Invoker:
    return Invoker(errors, slow_callback=0.25)


@pytest.fixture
def started() -> Iterator[Callable[..., Any]]:
    """Start dispatchers with an invoker; stop them all at teardown."""
    made: List[Dispatcher] = []

    def start(d: Dispatcher, inv: Invoker) -> Any:
        d.start(inv)
        made.append(d)
        return d

    yield start
    for d in made:
        d.stop(timeout=5)


# --------------------------------------------------------------------------- Invoker


def test_raising_callback_is_isolated_reported_and_logged(
    invoker: Invoker, errors: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    seen = Recorder()

    def bad(x: Any) -> None:
        if x == 1:
            raise ValueError("boom")
        seen(x)

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        for i in range(3):
            invoker.invoke("market.trade.BTCUSDT", bad, i)
    assert seen.snapshot() == [0, 2]  # later messages still delivered
    (err,) = errors.snapshot()
    assert isinstance(err, CallbackError)
    assert err.topic == "market.trade.BTCUSDT"
    assert isinstance(err.__cause__, ValueError) and str(err.__cause__) == "boom"
    (rec,) = [r for r in caplog.records if r.name.startswith(LOGGER)]
    assert "market.trade.BTCUSDT" in rec.getMessage() and rec.exc_info is not None
    assert invoker.stats()["market.trade.BTCUSDT"]["errors"] == 1
    assert invoker.stats()["market.trade.BTCUSDT"]["calls"] == 3


def test_all_callbacks_of_a_topic_called_in_order_even_after_one_raises(
    invoker: Invoker, errors: Recorder
) -> None:
    order: List[str] = []

    def boom(x: Any) -> None:
        order.append("b")
        raise RuntimeError

    invoker.invoke_all("t", [lambda x: order.append("a"), boom, lambda x: order.append("c")], 1)
    assert order == ["a", "b", "c"]
    assert len(errors) == 1 and invoker.stats()["t"]["calls"] == 3


def test_on_error_that_raises_is_logged_not_propagated(caplog: pytest.LogCaptureFixture) -> None:
    def on_error(e: BaseException) -> None:
        raise KeyError("handler broken")

    inv = Invoker(on_error)
    with caplog.at_level(logging.ERROR, logger=LOGGER):
        inv.invoke("t", lambda x: 1 / 0, None)
        inv.report(ValueError("library error"))
    assert sum("on_error handler raised" in r.getMessage() for r in caplog.records) == 2
    Invoker().report(ValueError("no handler: fine"))


def test_base_exception_propagates_from_invoker(invoker: Invoker) -> None:
    def leave(x: Any) -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        invoker.invoke("t", leave, None)


def test_slow_callback_counted_and_warned_rate_limited(
    errors: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    inv = Invoker(errors, slow_callback=0.01)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):
            inv.invoke("slow.topic", lambda x: time.sleep(0.02), None)  # the behaviour under test
        inv.invoke("slow.topic", lambda x: None, None)
    s = inv.stats()["slow.topic"]
    assert s["slow"] == 2 and s["calls"] == 3 and s["max_ms"] >= 20
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "slow.topic" in warnings[0].getMessage()
    assert len(errors) == 0


def test_invoker_stats_percentiles_over_a_ring() -> None:
    inv = Invoker()
    for i in range(1500):
        inv.invoke("t", (lambda x: None) if i % 100 else (lambda x: time.sleep(0.002)), None)
    s = inv.stats()["t"]
    assert set(s) == {"calls", "errors", "slow", "p50_ms", "p99_ms", "max_ms"}
    assert s["calls"] == 1500 and s["errors"] == 0
    assert 0 <= s["p50_ms"] < 1.0 <= s["max_ms"]
    assert s["p50_ms"] <= s["p99_ms"] <= s["max_ms"]
    with pytest.raises(ValueError):
        Invoker(slow_callback=0)


# --------------------------------------------------------------------------- Inline


def test_inline_runs_on_submitter_thread_and_ignores_when_not_running(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = InlineDispatcher()
    rec = Recorder()
    d.submit("c", "t", [rec], "before start")
    started(d, invoker)
    d.start(invoker)  # idempotent
    d.submit("c", "t", [rec, rec], 1)
    d.stop()
    d.stop()
    d.submit("c", "t", [rec], "after stop")
    assert rec.snapshot() == [1, 1]
    assert rec.threads == [threading.current_thread().name] * 2
    st_ = d.stats()
    assert st_["ignored"] == 2 and st_["dispatcher"] == "inline" and st_["running"] is False
    with pytest.raises(RuntimeError):
        d.start(invoker)


# --------------------------------------------------------------------------- Worker


def test_worker_keeps_order_per_lane_and_runs_on_its_worker_thread(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(), invoker)
    recs = {"a": Recorder(), "b": Recorder()}
    for i in range(2000):
        lane = "a" if i % 3 else "b"
        d.submit(lane, f"t{i % 5}", [recs[lane]], i)
    wait_until(lambda: len(recs["a"]) + len(recs["b"]) == 2000)
    for lane, rec in recs.items():
        items = rec.snapshot()
        assert items == sorted(items) and items
        assert set(rec.threads) == {f"sixmm-worker-{lane}"}
    s = d.stats()
    assert set(s["lanes"]) == {"a", "b"} and s["drops"] == 0 and s["overflow"] == "block"
    assert 1 <= s["max_depth"] <= 2000


def test_worker_block_policy_applies_backpressure_and_measures_it(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(maxsize=2), invoker)
    gate = Gate()
    d.submit("c", "t", [gate], 0)
    assert gate.entered.wait(5)  # item 0 in flight: one slot left
    d.submit("c", "t", [gate], 1)
    submitter = threading.Thread(target=d.submit, args=("c", "t", [gate], 2), name="submitter")
    submitter.start()
    wait_until(lambda: d.stats()["blocked"] == 1)
    assert submitter.is_alive()  # the reader waits for room
    time.sleep(0.05)  # let some blocked time accumulate (measured below)
    gate.opened.set()
    t0 = time.monotonic()
    submitter.join(5)
    assert not submitter.is_alive()
    assert time.monotonic() - t0 < 0.5  # woken when room appears, not by its bounded wait
    wait_until(lambda: gate.items == [0, 1, 2])
    s = d.stats()
    assert s["drops"] == 0 and s["blocked_ms"] >= 40 and s["lanes"]["c"]["blocked"] == 1


def test_worker_frees_room_per_message_not_per_batch(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(maxsize=2), invoker)
    first, second = Gate(), Gate()
    d.submit("c", "t", [first], 0)
    assert first.entered.wait(5)
    d.submit("c", "t", [second], 1)
    submitter = threading.Thread(target=d.submit, args=("c", "t", [second], 2), name="reader")
    submitter.start()
    wait_until(lambda: d.stats()["blocked"] == 1)
    first.opened.set()
    assert second.entered.wait(5)  # the worker is busy with message 1 ...
    # ... and message 0's slot was already handed to the blocked reader (were room freed per
    # batch, it would stay blocked until `second` opens below, however long we waited here)
    submitter.join(5)
    assert not submitter.is_alive()
    second.opened.set()
    wait_until(lambda: second.items == [1, 2])


def test_worker_block_timeout_then_drops_and_reports(
    errors: Recorder, invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(maxsize=1, block_timeout=0.05), invoker)
    gate = Gate()
    d.submit("c", "t", [gate], 0)
    assert gate.entered.wait(5)
    t0 = time.monotonic()
    d.submit("c", "t", [gate], 1)  # full: waits 50 ms, then drops
    assert 0.04 <= time.monotonic() - t0 < 2
    gate.opened.set()
    wait_until(lambda: overflow_total(errors.snapshot()) == 1)
    assert gate.items == [0] and d.stats()["drops"] == 1


def test_worker_drop_policy_counts_and_reports_on_worker_thread(
    errors: Recorder,
    invoker: Invoker,
    started: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = started(WorkerDispatcher(maxsize=2, overflow="drop"), invoker)
    gate = Gate()
    d.submit("c", "t", [gate], 0)
    assert gate.entered.wait(5)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(1, 6):
            d.submit("c", "t", [gate], i)  # one more fits (0 is in flight); 4 dropped
    assert [r for r in caplog.records if "full" in r.getMessage()]  # logged at once
    assert len(errors) == 0  # ... but on_error only runs on the worker thread
    gate.opened.set()
    wait_until(lambda: overflow_total(errors.snapshot()) == 4)
    assert gate.items == [0, 1]
    (report,) = errors.snapshot()
    assert isinstance(report, QueueOverflow) and report.topic == "t" and report.maxsize == 2
    assert errors.threads == ["sixmm-worker-c"]
    assert d.stats()["drops"] == 4 and d.stats()["lanes"]["c"]["drops"] == 4
    d.stop()
    assert overflow_total(errors.snapshot()) == 4  # reported once, not again at stop


def test_worker_callback_submitting_to_its_own_full_lane_does_not_deadlock(
    errors: Recorder, invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(maxsize=1), invoker)  # block policy
    rec = Recorder()

    def resubmit(x: Any) -> None:
        rec(x)
        if x == 0:
            d.submit("c", "t", [resubmit], 1)  # fits? no: item 0 is in flight -> dropped

    d.submit("c", "t", [resubmit], 0)
    wait_until(lambda: overflow_total(errors.snapshot()) == 1)
    assert rec.snapshot() == [0]


@pytest.mark.parametrize("conflate", [False, True])
def test_idle_worker_is_woken_at_once(
    conflate: bool, invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(conflate=True), invoker)
    rec = Recorder()
    d.submit("c", "t", [rec], 0, conflate=conflate)
    wait_until(lambda: d._lanes["c"].waiting)  # the worker is idle
    t0 = time.monotonic()
    d.submit("c", "t", [rec], 1, conflate=conflate)
    wait_until(lambda: len(rec) == 2, timeout=4)
    # woken, not found by its bounded idle wait (5 s); slack for a loaded machine
    assert time.monotonic() - t0 < 2.5


def test_worker_conflation_keeps_newest_in_place(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(conflate=True), invoker)
    gate, rec = Gate(), Recorder()
    d.submit("c", "gate", [gate], "g")
    assert gate.entered.wait(5)
    d.submit("c", "ticker", [rec], "t1", conflate=True)
    d.submit("c", "trade", [rec], "x1")
    d.submit("c", "ticker", [rec], "t2", conflate=True)
    d.submit("c", "trade", [rec], "x2", conflate=False)
    d.submit("c", "ticker", [rec], "t3", conflate=True)
    gate.opened.set()
    wait_until(lambda: len(rec) == 3)
    assert rec.snapshot() == ["t3", "x1", "x2"]
    assert d.stats()["conflations"] == 2


def test_worker_stop_from_inside_a_callback_finishes_queue_and_leaves_no_thread(
    invoker: Invoker,
) -> None:
    d = WorkerDispatcher()
    d.start(invoker)
    rec, stopped = Recorder(), threading.Event()

    def stopper(x: Any) -> None:
        rec(x)
        if x == 0:
            d.stop(timeout=2)  # on the worker thread: must not join itself
            stopped.set()

    gate = Gate()
    d.submit("c", "t", [gate], "g")
    assert gate.entered.wait(5)
    for i in range(5):
        d.submit("c", "t", [stopper], i)
    gate.opened.set()
    assert stopped.wait(5)
    wait_until(lambda: not d.stats()["lanes"]["c"]["alive"])
    assert rec.snapshot() == [0, 1, 2, 3, 4]  # what was queued before stop still ran
    d.submit("c", "t", [rec], 99)  # after stop: ignored
    assert d.stats()["ignored"] == 1 and len(rec) == 5
    d.stop()  # idempotent; joins nothing left


def test_worker_stop_timeout_drops_the_rest_counted(invoker: Invoker) -> None:
    d = WorkerDispatcher()
    d.start(invoker)
    rec = Recorder()

    def slow(x: Any) -> None:
        rec(x)
        time.sleep(0.02)  # a slow consumer is the behaviour under test

    for i in range(200):
        d.submit("c", "t", [slow], i)
    t0 = time.monotonic()
    d.stop(timeout=0.3)
    # the timeout is honoured (the queue holds ~4 s of work); slack for a loaded machine
    assert time.monotonic() - t0 < 2.5
    s = d.stats()
    assert not s["lanes"]["c"]["alive"]
    assert s["dropped_on_stop"] > 0 and s["dropped_on_stop"] + len(rec) == 200
    assert rec.snapshot() == list(range(len(rec)))


def test_worker_close_lane_finishes_its_queue_and_joins(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(), invoker)
    rec = Recorder()
    for i in range(100):
        d.submit("old", "t", [rec], i)
    d.submit("kept", "t", [rec], "k")
    d.close_lane("old", timeout=5)
    assert [x for x in rec.snapshot() if x != "k"] == list(range(100))
    assert "old" not in d.stats()["lanes"] and "kept" in d.stats()["lanes"]
    assert not [t for t in threading.enumerate() if t.name == "sixmm-worker-old"]
    d.submit("old", "t", [rec], 100)  # a new worker for a reused name
    wait_until(lambda: 100 in rec.snapshot())
    d.close_lane("nonexistent")


def test_worker_report_runs_on_the_lane_thread(
    errors: Recorder, invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(), invoker)
    err = ValueError("malformed frame")
    d.report("conn-1", err)
    wait_until(lambda: len(errors) == 1)
    assert errors.snapshot() == [err] and errors.threads == ["sixmm-worker-conn-1"]


def test_worker_survives_system_exit_in_callback(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(), invoker)
    rec = Recorder()

    def leave(x: Any) -> None:
        raise SystemExit

    d.submit("c", "t", [leave], 0)
    d.submit("c", "t", [rec], 1)
    wait_until(lambda: rec.snapshot() == [1])


# --------------------------------------------------------------------------- Queue


def test_queue_runs_callbacks_only_on_the_draining_thread(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(), invoker)
    rec = Recorder()
    reader = threading.Thread(
        target=lambda: [d.submit("c", "t", [rec], i) for i in range(10)], name="reader"
    )
    reader.start()
    reader.join(5)
    assert len(rec) == 0 and d.stats()["depth"] == 10
    assert d.stats()["lanes"]["c"]["depth"] == 10
    assert d.drain(max_items=3) == 3 and rec.snapshot() == [0, 1, 2]
    assert d.drain() == 7 and rec.snapshot() == list(range(10))
    assert set(rec.threads) == {threading.current_thread().name}
    assert d.drain() == 0
    assert d.stats()["max_depth"] == 10


def test_queue_drain_none_only_runs_what_was_queued_at_the_call(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(), invoker)
    rec = Recorder()

    def more(x: Any) -> None:
        rec(x)
        d.submit("c", "t", [more], x + 1)  # a producer faster than the consumer

    d.submit("c", "t", [more], 0)
    d.submit("c", "t", [more], 100)
    assert d.drain() == 2 and d.drain() == 2
    assert rec.snapshot() == [0, 100, 1, 101]


def test_queue_conflation_newest_per_topic_never_trades(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(conflate=True), invoker)
    rec = Recorder()
    d.submit("c", "ticker", [rec], "t1", conflate=True)
    d.submit("c", "trade", [rec], "x1")
    d.submit("c", "ticker", [rec], "t2", conflate=True)
    d.submit("c2", "ticker", [rec], "other-lane", conflate=True)  # (lane, topic) keyed
    d.submit("c", "trade", [rec], "x2")
    d.submit("c", "ticker", [rec], "t3", conflate=True)
    assert d.drain() == 4
    assert rec.snapshot() == ["t3", "x1", "other-lane", "x2"]
    assert d.stats()["conflations"] == 2
    d.submit("c", "ticker", [rec], "t4", conflate=True)  # after a drain: a fresh slot
    assert d.drain() == 1 and rec.snapshot()[-1] == "t4"


def test_queue_without_conflation_never_conflates(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(conflate=False), invoker)
    rec = Recorder()
    for i in range(3):
        d.submit("c", "ticker", [rec], i, conflate=True)
    assert d.drain() == 3 and rec.snapshot() == [0, 1, 2] and d.stats()["conflations"] == 0


def test_queue_drop_policy_counts_logs_and_reports_from_drain(
    errors: Recorder,
    invoker: Invoker,
    started: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = started(QueueDispatcher(maxsize=3), invoker)
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(5):
            d.submit("c", "trade", [rec], i)  # a GUI that does not drain: reader never stalls
        d.submit("c", "kline", [rec], "k")
    assert sum("full" in r.getMessage() for r in caplog.records) == 1  # rate-limited
    assert len(errors) == 0
    assert d.drain() == 3 and rec.snapshot() == [0, 1, 2]
    reports = errors.snapshot()
    assert {(e.topic, e.dropped) for e in reports} == {("trade", 2), ("kline", 1)}
    assert set(errors.threads) == {threading.current_thread().name}
    s = d.stats()
    assert s["drops"] == 3 and s["overflow"] == "drop" and s["lanes"]["c"]["drops"] == 3


def test_queue_with_conflation_state_topics_never_overflow(
    errors: Recorder, invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(maxsize=2, conflate=True), invoker)
    rec = Recorder()
    for i in range(100):
        d.submit("c", f"ticker.{i % 2}", [rec], i, conflate=True)
    assert d.stats()["drops"] == 0 and d.stats()["depth"] == 2
    assert d.drain() == 2 and rec.snapshot() == [98, 99] and len(errors) == 0


def test_queue_block_policy_waits_for_a_drain(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(maxsize=1, overflow="block"), invoker)
    rec = Recorder()
    d.submit("c", "t", [rec], 0)
    reader = threading.Thread(target=d.submit, args=("c", "t", [rec], 1), name="reader")
    reader.start()
    wait_until(lambda: d.stats()["blocked"] == 1)
    assert d.drain() == 1
    reader.join(5)
    assert not reader.is_alive() and d.drain() == 1 and rec.snapshot() == [0, 1]
    assert d.stats()["drops"] == 0


def test_queue_stop_during_drain_does_not_deadlock(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(), invoker)
    rec = Recorder()

    def stopper(x: Any) -> None:
        rec(x)
        if x == 1:
            d.stop(timeout=1)

    for i in range(4):
        d.submit("c", "t", [stopper], i)
    assert d.drain(max_items=2) == 2
    d.submit("c", "t", [stopper], 99)  # after stop: ignored
    assert d.drain() == 2 and rec.snapshot() == [0, 1, 2, 3]  # queued before stop still runs
    assert d.stats()["ignored"] == 1 and d.stats()["running"] is False


def test_queue_on_ready_fires_on_empty_to_non_empty(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    ready = Recorder()
    d = started(QueueDispatcher(on_ready=lambda: ready(1)), invoker)
    for i in range(3):
        d.submit("c", "t", [], i)
    assert len(ready) == 1
    d.drain()
    d.submit("c", "t", [], 3)
    assert len(ready) == 2
    d.submit("c", "t", [], 4)
    assert len(ready) == 2
    d.drain(max_items=1)  # one left: the drain re-signals it
    assert len(ready) == 3
    d.drain()
    assert len(ready) == 3


def test_queue_report_and_nested_drain(
    errors: Recorder, invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(), invoker)
    nested: List[int] = []
    d.report("c", ValueError("bad frame"))
    d.submit("c", "t", [lambda x: nested.append(d.drain())], 0)
    d.submit("c", "t", [lambda x: nested.append(-1)], 1)
    assert len(errors) == 0  # reported on the draining thread only
    assert d.drain() == 3
    assert nested == [0, -1] and isinstance(errors.snapshot()[0], ValueError)


def test_queue_base_exception_requeues_what_did_not_run(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(), invoker)
    rec = Recorder()

    def leave(x: Any) -> None:
        raise SystemExit

    d.submit("c", "t", [rec], 0)
    d.submit("c", "t", [leave], 1)
    d.submit("c", "t", [rec], 2)
    with pytest.raises(SystemExit):
        d.drain()
    assert d.stats()["depth"] == 1
    assert d.drain() == 1 and rec.snapshot() == [0, 2]


def test_stats_fields_present(invoker: Invoker, started: Callable[..., Any]) -> None:
    keys = {
        "dispatcher",
        "running",
        "overflow",
        "maxsize",
        "conflate",
        "depth",
        "max_depth",
        "drops",
        "conflations",
        "lag_ms",
        "blocked_ms",
        "blocked",
        "dropped_on_stop",
        "ignored",
        "lanes",
    }
    for d in (InlineDispatcher(), WorkerDispatcher(), QueueDispatcher()):
        started(d, invoker)
        assert set(d.stats()) == keys
    q = started(QueueDispatcher(), invoker)
    q.submit("c", "t", [], 0)
    wait_until(lambda: q.stats()["lag_ms"] > 0)
    with pytest.raises(ValueError):
        WorkerDispatcher(overflow="grow")
    with pytest.raises(ValueError):
        QueueDispatcher(maxsize=0)


# ---------------------------------------------------------- property: queue vs a model


Op = Tuple[str, Any]

ops_strategy = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"),
            st.tuples(st.sampled_from("ab"), st.sampled_from(["x", "y", "z"]), st.booleans()),
        ),
        st.tuples(st.just("drain"), st.integers(min_value=1, max_value=4)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops_strategy, maxsize=st.integers(min_value=1, max_value=6), conflate=st.booleans())
def test_queue_matches_reference_model(ops: List[Op], maxsize: int, conflate: bool) -> None:
    inv = Invoker()
    d = QueueDispatcher(maxsize=maxsize, conflate=conflate)
    d.start(inv)
    got: List[Any] = []
    model: List[List[Any]] = []  # [lane, topic, conflatable, value]
    expected: List[Any] = []
    drops = 0
    for seq, (kind, arg) in enumerate(ops):
        if kind == "submit":
            lane, topic, cf = arg
            value = (lane, topic, seq)
            d.submit(lane, topic, [got.append], value, conflate=cf)
            cf = cf and conflate
            slot = next((m for m in model if cf and m[2] and m[:2] == [lane, topic]), None)
            if slot is not None:
                slot[3] = value
            elif len(model) < maxsize:
                model.append([lane, topic, cf, value])
            else:
                drops += 1
        else:
            ran = d.drain(max_items=arg)
            assert ran == min(arg, len(model))
            expected += [m[3] for m in model[:ran]]
            del model[:ran]
        assert got == expected
    assert d.stats()["drops"] == drops and d.stats()["depth"] == len(model)
    d.stop()


# --------------------------------------------------------------------------- gui


class FakeRoot:
    """Tk's after/after_cancel, driven by hand."""

    def __init__(self) -> None:
        self.pending: Dict[str, Tuple[int, Callable[[], None]]] = {}
        self.delays: List[int] = []
        self.n = 0

    def after(self, ms: int, func: Callable[[], None]) -> str:
        self.n += 1
        ident = f"after#{self.n}"
        self.pending[ident] = (ms, func)
        self.delays.append(ms)
        return ident

    def after_cancel(self, ident: str) -> None:
        self.pending.pop(ident, None)

    def run_due(self) -> None:
        for ident, (_, func) in list(self.pending.items()):
            del self.pending[ident]
            func()


def test_tk_pump_drains_repeatedly_and_cancels(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(), invoker)
    root, rec = FakeRoot(), Recorder()
    cancel = tk_pump(root, d, interval_ms=20, max_items=2)
    assert root.delays == [20] and len(rec) == 0
    for i in range(3):
        d.submit("c", "t", [rec], i)
    root.run_due()
    assert rec.snapshot() == [0, 1] and root.delays[-1] == 1  # hit max_items: come back soon
    root.run_due()
    assert rec.snapshot() == [0, 1, 2] and root.delays[-1] == 20
    cancel()
    assert not root.pending
    cancel()  # idempotent


def test_the_pumps_lower_the_switch_interval_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # the GUI thread gets the GIL within ~1 ms of asking while readers are busy
    import sys

    from sixmm import gui

    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        tk_pump(FakeRoot(), QueueDispatcher(), switch_interval=None)()
        assert sys.getswitchinterval() == pytest.approx(0.005)
        tk_pump(FakeRoot(), QueueDispatcher())()
        assert sys.getswitchinterval() == pytest.approx(gui.GUI_SWITCH_INTERVAL)
        sys.setswitchinterval(0.0002)  # an application's own, lower choice stays
        tk_pump(FakeRoot(), QueueDispatcher())()
        assert sys.getswitchinterval() == pytest.approx(0.0002)
    finally:
        sys.setswitchinterval(before)


def test_tk_pump_cancel_from_inside_a_callback(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(QueueDispatcher(), invoker)
    root = FakeRoot()
    cancel = tk_pump(root, d)
    d.submit("c", "t", [lambda x: cancel()], 0)
    root.run_due()
    assert not root.pending


def test_tk_pump_with_real_tk(
    invoker: Invoker, started: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    tkinter = pytest.importorskip("tkinter")
    screen = None  # Windows and macOS need no X display
    if sys.platform not in ("win32", "darwin"):
        screen = os.environ.get("DISPLAY") or request.getfixturevalue("display")  # else Xvfb
    try:
        root = tkinter.Tk(screenName=screen)
    except tkinter.TclError as exc:
        pytest.skip(f"no usable display: {exc}")
    rec = Recorder()
    stop = [root.quit]  # a holder, emptied below
    cancel: Optional[Callable[[], None]] = None
    try:
        d = started(QueueDispatcher(), invoker)
        cancel = tk_pump(root, d, interval_ms=5)
        d.submit("c", "t", [rec, lambda x: stop[0]()], "hello")
        root.after(5000, root.quit)
        root.mainloop()
        cancel()
    finally:
        root.destroy()
        # Tk aborts the process if its last reference dies on another thread (a later test's
        # garbage collection on a worker thread): free it here, on this (the Tk) thread.
        stop.clear()
        del root, cancel
        gc.collect()
    assert rec.snapshot() == ["hello"] and rec.threads == [threading.current_thread().name]


def test_qt_pump_uses_an_available_binding(
    invoker: Invoker, started: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    class FakeSignal:
        def __init__(self) -> None:
            self.slots: List[Callable[[], Any]] = []

        def connect(self, slot: Callable[[], Any]) -> None:
            self.slots.append(slot)

    class FakeQTimer:
        def __init__(self, parent: Optional[object]) -> None:
            self.parent, self.interval, self.running = parent, 0, False
            self.timeout = FakeSignal()

        def setInterval(self, ms: int) -> None:
            self.interval = ms

        def start(self) -> None:
            self.running = True

    qtcore = types.ModuleType("PyQt5.QtCore")
    qtcore.QTimer = FakeQTimer  # type: ignore[attr-defined]
    for name in ("PySide6", "PyQt6", "PySide2"):  # make these unimportable, even if imported
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setitem(sys.modules, f"{name}.QtCore", None)
    monkeypatch.setitem(sys.modules, "PyQt5", types.ModuleType("PyQt5"))
    monkeypatch.setitem(sys.modules, "PyQt5.QtCore", qtcore)
    d = started(QueueDispatcher(), invoker)
    rec = Recorder()
    parent = object()
    timer = qt_pump(d, interval_ms=30, max_items=1, parent=parent)
    assert isinstance(timer, FakeQTimer) and timer.running
    assert timer.interval == 30 and timer.parent is parent
    d.submit("c", "t", [rec], 0)
    d.submit("c", "t", [rec], 1)
    timer.timeout.slots[0]()  # one timer tick
    assert rec.snapshot() == [0]


def test_qt_pump_without_qt_raises_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PySide6", "PyQt6", "PyQt5", "PySide2"):
        monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setitem(sys.modules, f"{name}.QtCore", None)
    with pytest.raises(ImportError, match="PySide6"):
        qt_pump(QueueDispatcher())


# ------------------------------------------------------ stress: lock-free hot path


def test_worker_stress_many_producers_small_queue_exactly_once_in_order(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    d = started(WorkerDispatcher(maxsize=8), invoker)  # block policy: exercises waits/wakeups
    rec = Recorder()
    per_producer = 3000

    def produce(p: int) -> None:
        for i in range(per_producer):
            d.submit(f"lane{p % 2}", "trade", [rec], (p, i))
            if i % 500 == 0:
                time.sleep(0.002)  # let the worker go idle: exercises the sleep/wake handshake

    producers = [threading.Thread(target=produce, args=(p,), name=f"p{p}") for p in range(4)]
    for t in producers:
        t.start()
    for t in producers:
        t.join(30)
    wait_until(lambda: len(rec) == 4 * per_producer, timeout=3)  # < the 5 s idle bound
    items = rec.snapshot()
    for p in range(4):
        assert [i for q, i in items if q == p] == list(range(per_producer))


def test_conflation_never_loses_the_newest_state_under_concurrency(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    w = started(WorkerDispatcher(maxsize=4, conflate=True), invoker)
    q = started(QueueDispatcher(maxsize=4, conflate=True), invoker)
    seen: Dict[str, Any] = {}

    def state(x: Tuple[str, int]) -> None:
        seen[x[0]] = x[1]

    stop_draining = threading.Event()

    def gui() -> None:
        while not stop_draining.is_set():
            q.drain(max_items=3)
        q.drain()

    drainer = threading.Thread(target=gui, name="gui")
    drainer.start()
    for i in range(5000):
        for name, d in (("w", w), ("q", q)):
            topic = f"ticker.{i % 3}"
            d.submit("c", topic, [state], (f"{name}:{topic}", i), conflate=True)
    stop_draining.set()
    drainer.join(10)
    newest = {0: 4998, 1: 4999, 2: 4997}  # the last i with i % 3 == topic
    expected = {f"{n}:ticker.{j}": newest[j] for n in "wq" for j in range(3)}
    wait_until(lambda: seen == expected, timeout=3)


def test_queue_on_ready_driven_gui_misses_nothing(
    invoker: Invoker, started: Callable[..., Any]
) -> None:
    ready = threading.Event()
    d = started(QueueDispatcher(maxsize=100_000, on_ready=ready.set), invoker)
    rec = Recorder()
    n = 20000
    done = threading.Event()

    def gui() -> None:  # drains only when told: a lost on_ready would hang here
        while len(rec) < n:
            if not ready.wait(5):
                return
            ready.clear()
            d.drain(max_items=None)
        done.set()

    drainer = threading.Thread(target=gui, name="gui")
    drainer.start()
    for i in range(n):
        d.submit("c", "t", [rec], i)
        if i % 1000 == 0:
            time.sleep(0.001)
    assert done.wait(10), f"GUI stalled at {len(rec)}/{n}: an on_ready was lost"
    drainer.join(5)
    assert rec.snapshot() == list(range(n))


def test_a_callback_raising_on_every_message_does_not_flood_the_log(
    errors: Recorder, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sixmm.dispatch.invoker as invoker_module

    clock = [1000.0]
    monkeypatch.setattr(invoker_module, "monotonic", lambda: clock[0])
    inv = Invoker(errors)

    def bad(x: Any) -> None:
        raise ValueError(f"bad {x}")

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        for i in range(500):
            inv.invoke("t", bad, i)
        inv.invoke("t", lambda x: 1 / 0, None)  # another exception type is logged at once
        clock[0] += 5.0
        inv.invoke("t", bad, "later")
    assert len(errors) == 502  # on_error sees every one
    assert inv.stats()["t"]["errors"] == 502
    messages = [r.getMessage() for r in caplog.records if r.name.startswith(LOGGER)]
    assert len(messages) == 3, messages
    assert messages[0] == "callback for t raised"
    assert "ZeroDivisionError" in str(caplog.records[1].exc_info)
    assert messages[2] == (
        "callback for t raised (499 more ValueError not logged since the last one)"
    )
    assert all(r.exc_info is not None for r in caplog.records)
