"""The pure listenKey machine: the transition table, the decisions, and random event walks."""

from __future__ import annotations

from typing import List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixmm.config import DEFAULT_REPORT_PACING, Backoff
from sixmm.protocol.listenkey import (
    DEAD_KEYS_REPORT_AFTER,
    TRANSITIONS,
    ActionKind,
    Created,
    FailKind,
    IllegalTransition,
    ListenKeyMachine,
    State,
)

BACKOFF = Backoff(initial=1.0, maximum=60.0, jitter=False)
KEY = "KEYSECRETaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1"


def machine(interval: float = 100.0) -> ListenKeyMachine:
    return ListenKeyMachine(renew_interval=interval, backoff=BACKOFF)


def test_table_covers_every_state_and_terminal_states_stay_put() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.STOPPED] == {State.STOPPED}
    assert State.ALIVE not in TRANSITIONS[State.FATAL]


def test_first_key_then_renew_on_schedule() -> None:
    m = machine()
    assert m.next_action(0.0).kind is ActionKind.CREATE
    assert m.next_deadline() is None
    assert m.created(KEY, 10.0) is Created.FIRST
    assert m.state is State.ALIVE and m.key == KEY
    assert m.next_deadline() == 110.0
    assert m.next_action(109.9).kind is ActionKind.WAIT
    action = m.next_action(110.0)
    assert action.kind is ActionKind.RENEW and action.key == KEY
    m.renewed(111.0)
    assert m.next_deadline() == 211.0
    assert m.drain() == [("created", "listenKey created"), ("renewed", "listenKey renewed")]
    assert m.drain() == []
    assert m.stats(111.0)["renewals"] == 1


def test_transient_failure_backs_off_then_gone_recreates_and_closes_old() -> None:
    m = machine()
    m.created(KEY, 0.0)
    m.key_accepted()
    m.renew_failed(FailKind.TRANSIENT, "HTTP 503", 100.0)
    assert m.next_deadline() == 101.0  # attempt 0: 1 s
    m.renew_failed(FailKind.TRANSIENT, "HTTP 503", 101.0)
    assert m.next_deadline() == 103.0  # attempt 1: 2 s
    assert m.stats(103.0)["consecutive_failures"] == 2
    m.renew_failed(FailKind.GONE, "code 5004", 103.0)
    assert m.state is State.NEEDS_KEY
    assert m.next_action(103.0).kind is ActionKind.CREATE  # at once: it was proven
    assert m.created("NEWKEY", 104.0) is Created.REPLACED
    close = m.next_action(104.0)
    assert close.kind is ActionKind.CLOSE and close.key == KEY
    assert KEY not in repr(close)
    m.old_key_closed()
    assert m.next_action(104.0).kind is ActionKind.WAIT
    kinds = [k for k, _ in m.drain()]
    assert kinds == ["created", "renew_failed", "renew_failed", "recreated"]
    s = m.stats(104.0)
    assert (s["recreations"], s["renew_failures"], s["consecutive_failures"]) == (1, 2, 0)


def test_auth_is_fatal_and_ends() -> None:
    m = machine()
    m.created(KEY, 0.0)
    m.renew_failed(FailKind.AUTH, "AuthError: bad key", 100.0)
    assert m.state is State.FATAL and m.fatal
    assert m.next_action(100.0).kind is ActionKind.END
    assert m.next_deadline() is None
    assert m.drain()[-1] == ("fatal", "credentials rejected: AuthError: bad key")
    m.stop()
    assert m.release_key() is None  # not closed after a fatal
    assert m.stats(0.0)["fatal"] is True


def test_illegal_events_raise() -> None:
    m = machine()
    with pytest.raises(IllegalTransition):
        m.renewed(0.0)
    m.created(KEY, 0.0)
    with pytest.raises(IllegalTransition):
        m.created("OTHER", 1.0)
    with pytest.raises(IllegalTransition):
        m.create_failed(FailKind.TRANSIENT, "x", 1.0)


def test_stopped_discards_a_late_key_and_releases_the_current_one() -> None:
    m = machine()
    m.created(KEY, 0.0)
    m.renew_failed(FailKind.GONE, "gone", 1.0)
    m.stop()
    assert m.created("LATE", 2.0) is Created.DISCARD
    assert m.next_action(2.0).kind is ActionKind.END
    assert m.release_key() == KEY
    assert m.key is None


def test_dead_on_arrival_paced_and_reported_on_schedule() -> None:
    m = machine()
    m.created(KEY, 0.0)
    now = 0.0
    reported: List[int] = []
    for n in range(1, 25):
        m.renew_failed(FailKind.GONE, "5004", now)
        expected = 0.0 if n == 1 else BACKOFF.delay(n - 2)
        assert m.next_deadline() == now + expected
        m.key_rejected("refused", now)  # cannot hurry a paced creation
        if expected > 0:
            assert m.next_action(now).kind is ActionKind.WAIT
        now += expected
        assert m.next_action(now).kind is ActionKind.CREATE
        m.created(f"K{n}", now)
        m.next_action(now)
        m.old_key_closed()
        for kind, text in m.drain():
            if kind == "dead_on_arrival":
                reported.append(int(text.split()[0]))
    every = DEFAULT_REPORT_PACING.every
    assert reported == [
        n
        for n in range(1, 25)
        if n >= DEAD_KEYS_REPORT_AFTER and (n - DEAD_KEYS_REPORT_AFTER) % every == 0
    ]
    assert m.stats(now)["dead_on_arrival"] == 24
    assert m.stats(now)["paced_creations"] == 23
    m.key_accepted()
    assert m.stats(now)["dead_on_arrival_in_row"] == 0


def test_hold_and_requests() -> None:
    m = machine()
    m.created(KEY, 0.0)
    m.renew_now()
    assert m.next_action(1.0).kind is ActionKind.RENEW
    m.held(50.0)
    assert m.next_deadline() == 50.0
    assert m.next_action(49.0).kind is ActionKind.WAIT  # the request was taken
    m.key_rejected("refused", 49.0)
    assert m.next_action(49.0).kind is ActionKind.RENEW


def test_key_never_in_text_even_if_the_shell_passes_it() -> None:
    m = machine()
    m.created(KEY, 0.0)
    m.renew_failed(FailKind.TRANSIENT, f"boom {KEY}", 1.0)
    texts = [t for _, t in m.drain()]
    assert texts and all(KEY not in t for t in texts)
    assert "***" in texts[-1]
    assert KEY not in repr(m)


# ----------------------------------------------------------------- random walks

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "tick",
                "transient",
                "gone",
                "auth",
                "rejected",
                "accepted",
                "renew_now",
                "held",
                "create_fail",
                "crash",
                "stop",
            ]
        ),
        st.floats(min_value=0.0, max_value=200.0),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(EVENTS)
def test_random_walk(events: List[Tuple[str, float]]) -> None:
    m = ListenKeyMachine(renew_interval=100.0, backoff=BACKOFF)
    now = 0.0
    m.created(KEY, now)
    serial = 0
    gone_at: List[Tuple[float, int]] = []  # (when, dead in a row) of each dead-on-arrival
    notices: List[Tuple[str, str]] = []
    for name, dt in events:
        now += dt
        if name == "tick":
            action = m.next_action(now)
            if action.kind is ActionKind.RENEW:
                m.renewed(now)
            elif action.kind is ActionKind.CREATE:
                if gone_at:  # paced creation: never before the backoff allows
                    when, in_row = gone_at[-1]
                    assert now + 1e-9 >= when + (0.0 if in_row <= 1 else BACKOFF.delay(in_row - 2))
                serial += 1
                m.created(f"{KEY}{serial}", now)
                gone_at.clear()
            elif action.kind is ActionKind.CLOSE:
                assert action.key is not None and action.key.startswith(KEY)
                m.old_key_closed()
        elif name in ("transient", "gone", "auth") and m.state is State.ALIVE:
            before = m.stats(now)["dead_on_arrival_in_row"]
            m.renew_failed(FailKind(name), f"HTTP {name} {m.key}", now)
            after = m.stats(now)["dead_on_arrival_in_row"]
            if after > before:
                gone_at.append((now, after))
        elif name == "create_fail" and m.state is State.NEEDS_KEY:
            m.create_failed(FailKind.TRANSIENT, f"HTTP 503 {m.key}", now)
            gone_at.clear()  # the retry follows the failure backoff instead
        elif name == "rejected":
            m.key_rejected("refused", now)
        elif name == "accepted":
            m.key_accepted()
        elif name == "renew_now":
            m.renew_now()
            gone_at.clear()  # an explicit request may hurry a creation (as before)
        elif name == "held" and m.state is State.ALIVE:
            m.held(now + 5.0)
        elif name == "crash":
            m.crashed("RuntimeError: bug")
        elif name == "stop":
            m.stop()
        if m.state in (State.ALIVE, State.NEEDS_KEY):
            assert m.next_deadline() is not None
        else:
            assert m.next_deadline() is None
            assert m.next_action(now).kind in (ActionKind.END, ActionKind.CLOSE)
        notices.extend(m.drain())
        assert KEY not in repr(m)
    assert all(KEY not in text for _, text in notices)
    assert {k for k, _ in notices} <= {
        "created",
        "renewed",
        "renew_failed",
        "recreated",
        "fatal",
        "dead_on_arrival",
    }
