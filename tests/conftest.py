"""Shared fixtures. An autouse fixture fails any test that leaves a sixmm thread running."""

from __future__ import annotations

import signal
import threading
import time
from typing import Iterator, List

import pytest

# A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored in
# every child; the Ctrl-C tests' children would never see their SIGINT. Catching it here turns
# it back to the default in children (a caught signal is reset by exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _sixmm_threads() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sixmm") and t.is_alive()]


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    before = set(_sixmm_threads())
    yield
    deadline = time.monotonic() + 5.0
    leaked = [t for t in _sixmm_threads() if t not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.02)
        leaked = [t for t in _sixmm_threads() if t not in before]
    assert not leaked, f"test left sixmm threads running: {[t.name for t in leaked]}"


@pytest.fixture
def sandbox() -> Iterator[object]:
    """A running sandbox exchange on 127.0.0.1 (random port, seed 0), stopped afterwards."""
    from sixmm.sandbox import Sandbox

    with Sandbox(port=0, seed=0) as sb:
        yield sb


# Hypothesis judges time too: a per-example deadline (200 ms) and a "too slow" health check
# on data generation. On a loaded 2-core CI machine either fails a correct test (a slow
# example is re-run fast and reported as Flaky). Timing is not what these tests check.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "sixmm", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("sixmm")
