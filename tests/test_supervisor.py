"""The reconnect supervisor: one connection's health decisions (pure, on a virtual clock),
the supervisor thread waking for the engines' deadlines, and both seen over a real socket."""

from __future__ import annotations

from typing import Any, List, Optional

from sixmm import Backoff, StreamManager
from sixmm.config import ReportPacing
from sixmm.protocol.reconnect import GiveUp, Retry
from sixmm.sandbox import Sandbox
from sixmm.settings import Settings
from sixmm.supervisor import Health, Supervisor

from .helpers import refused_port, wait_until


def _health(**kwargs: Any) -> Health:
    base = {"backoff": Backoff(initial=1.0, maximum=8.0, jitter=False), "stale_after": 5.0}
    base.update(kwargs)
    return Health(Settings(ping_interval=1.0, **base))


def test_a_socket_is_stale_only_past_stale_after() -> None:
    h = _health()
    assert h.stale(104.9, 100.0) is None
    assert h.stale(105.0, 100.0) is None
    assert h.stale(105.1, 100.0) == "stale: no frame for 5.0s"


def test_failures_walk_the_backoff_and_a_stable_socket_resets_it() -> None:
    h = _health()
    delays = [h.after_failure(0.0) for _ in range(5)]
    assert delays == [Retry(1.0), Retry(2.0), Retry(4.0), Retry(8.0), Retry(8.0)]
    assert h.stats(0.0) == {"failures_in_row": 5, "next_attempt_in": 8.0, "paced_restarts": 0}
    h.connecting()
    assert h.stats(0.0)["next_attempt_in"] is None
    # a short-lived socket does not reset the walk; one that lived stable_after does
    assert h.after_socket(opened_at=10.0, now=11.0) == Retry(8.0)
    assert h.after_socket(opened_at=10.0, now=10.0 + Settings().stable_after) == Retry(1.0)


def test_a_rate_limit_hold_is_never_cut_short_and_max_attempts_gives_up() -> None:
    h = _health(backoff=Backoff(initial=1.0, maximum=8.0, jitter=False, max_attempts=2))
    assert h.after_failure(0.0, held_for=30.0) == Retry(30.0)
    assert h.after_failure(0.0) == Retry(2.0)
    assert h.after_failure(0.0) == GiveUp(2)
    assert h.stats(0.0)["next_attempt_in"] is None


def test_one_immediate_restart_then_the_backoff() -> None:
    h = _health()
    h.restart()
    first = h.after_socket(opened_at=0.0, now=1.0)
    assert isinstance(first, Retry) and first.immediate and first.delay == 0.0
    h.restart()
    second = h.after_socket(opened_at=1.0, now=2.0)
    assert isinstance(second, Retry) and not second.immediate and second.delay > 0
    assert h.paced_restarts == 1


def test_connect_failures_are_reported_paced_and_a_socket_ends_the_run() -> None:
    h = _health(report_pacing=ReportPacing(every=3))
    told = [h.report_failure("connect failed: refused (attempt 1)") for _ in range(7)]
    assert told == [True, False, False, True, False, False, True]
    assert h.report_failure("connect failed: timed out")  # a new reason is told at once
    h.after_socket(opened_at=0.0, now=1.0)
    assert h.report_failure("connect failed: timed out")  # a fresh run after a socket


class _Session:
    def __init__(self, due_in: float) -> None:
        self.due: Optional[float] = None
        self._due_in = due_in
        self.turns: List[float] = []

    def on_tick(self, conn: Any, now: float) -> None:
        self.turns.append(now)
        self.due = now + self._due_in  # the engine names its next deadline


class _Conn:
    name = "fake"
    is_open = True

    def __init__(self, session: _Session) -> None:
        self.session = session

    def ping(self) -> None:
        pass


def test_the_supervisor_wakes_for_the_engines_deadline_not_its_tick() -> None:
    session = _Session(due_in=0.05)
    conn = _Conn(session)
    sup = Supervisor(lambda: [conn], lambda c: None, ping_interval=60.0, tick=30.0)
    # the first look comes after one tick; make it come now
    sup._tick = 0.01
    sup.start()
    try:
        wait_until(lambda: len(session.turns) >= 1, 5)
        sup._tick = 30.0  # from here only the engine's deadline can wake it this soon
        n = len(session.turns)
        wait_until(lambda: len(session.turns) >= n + 5, 5)
    finally:
        sup.stop(2.0)
    assert not sup._owner.alive
    assert sup.engine_turns >= 6


def test_health_shows_in_stats_over_real_sockets(sandbox: Sandbox) -> None:
    backoff = Backoff(initial=0.05, maximum=0.2, jitter=False)
    with (
        refused_port() as port,
        StreamManager(f"ws://127.0.0.1:{port}/ws", backoff=backoff) as down,
    ):
        down.trades("BTCUSDT", print)
        wait_until(lambda: down.stats()["connections"]["public-0"]["failures_in_row"] >= 3)
        conn = down.stats()["connections"]["public-0"]
        assert conn["failed_attempts"] >= 3 and conn["connects"] == 0
        assert conn["next_attempt_in"] is None or 0 <= conn["next_attempt_in"] <= 0.2
    with StreamManager(sandbox.ws_url, backoff=backoff, ping_interval=0.2, stale_after=2.0) as up:
        assert up.trades("BTCUSDT", lambda t: None).wait_ready(10)
        wait_until(lambda: up.stats()["heartbeat"]["engine_turns"] >= 2)
        conn = up.stats()["connections"]["public-0"]
        assert conn["failures_in_row"] == 0 and conn["next_attempt_in"] is None
