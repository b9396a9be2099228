"""Pure policy values: Backoff and the connection state table."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixmm import Backoff, StreamState
from sixmm.states import ConnState, check_transition, public_state


def test_backoff_defaults_and_exponential_cap() -> None:
    b = Backoff(jitter=False)
    assert (b.initial, b.maximum, b.factor, b.max_attempts) == (0.5, 30.0, 2.0, None)
    assert [b.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert b.delay(10) == 30.0 and b.delay(10_000) == 30.0
    assert not b.exhausted(10**6)


@given(st.integers(min_value=0, max_value=10_000), st.floats(min_value=0, max_value=1))
def test_full_jitter_stays_within_the_cap(attempt: int, r: float) -> None:
    b = Backoff()
    assert 0 <= b.delay(attempt, rand=lambda: r) <= b.cap(attempt)


def test_backoff_is_a_frozen_value() -> None:
    b = Backoff(max_attempts=3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        b.initial = 1.0  # type: ignore[misc]
    assert attrs.evolve(b, maximum=5.0).maximum == 5.0
    assert b.exhausted(3) and not b.exhausted(2)
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        b.cap(-1)


def test_state_table() -> None:
    check_transition(ConnState.IDLE, ConnState.CONNECTING)
    check_transition(ConnState.OPEN, ConnState.STREAMING)
    check_transition(ConnState.STREAMING, ConnState.BACKOFF)
    with pytest.raises(RuntimeError):
        check_transition(ConnState.CLOSED, ConnState.CONNECTING)
    with pytest.raises(RuntimeError):
        check_transition(ConnState.IDLE, ConnState.STREAMING)
    assert public_state(ConnState.STREAMING) is StreamState.CONNECTED
    assert public_state(ConnState.BACKOFF) is StreamState.SUSPENDED
    assert public_state(ConnState.CLOSED) is StreamState.LOST
    assert public_state(ConnState.IDLE) is None
