"""Shared fixtures. An autouse fixture fails any test that leaves a sixmm thread running."""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import threading
import time
from typing import Iterator, List

import pytest

# A shell starts background jobs with SIGINT ignored, and an ignored signal stays ignored in
# every child; the Ctrl-C tests' children would never see their SIGINT. Catching it here turns
# it back to the default in children (a caught signal is reset by exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("simulation", "the deterministic simulator (tests/test_simulation.py)")
    group.addoption(
        "--seeds", type=int, default=None, help="how many seeds (default 2000 or SIXMM_SIM_SEEDS)"
    )
    group.addoption("--seed", type=int, default=None, help="replay one seed")


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


@pytest.fixture
def display() -> Iterator[str]:
    """A fresh Xvfb server on a free display number (Xvfb picks it: ``-displayfd``); skips the
    test when Xvfb is not installed or does not start."""
    if shutil.which("Xvfb") is None:
        pytest.skip("needs Xvfb (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    try:
        xvfb = subprocess.Popen(
            [
                "Xvfb",
                "-displayfd",
                str(write_fd),
                "-screen",
                "0",
                "1024x768x24",
                "-nolisten",
                "tcp",
            ],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        pytest.skip(f"cannot start Xvfb: {exc}")
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 15.0)
        number = os.read(read_fd, 32).decode().strip() if ready else ""
        if not number.isdigit():
            pytest.skip("Xvfb did not report a display within 15 s")
        yield f":{number}"
    finally:
        os.close(read_fd)
        xvfb.terminate()
        try:
            xvfb.wait(10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait(5)


# Hypothesis judges time too: a per-example deadline (200 ms) and a "too slow" health check
# on data generation. On a loaded 2-core CI machine either fails a correct test (a slow
# example is re-run fast and reported as Flaky). Timing is not what these tests check.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "sixmm", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("sixmm")


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """``SIXMM_HYPOTHESIS_SCALE=0.25`` runs a quarter of every property test's examples (at
    least 10), explicit ``@settings(max_examples=...)`` included: CI explores fully on one
    Python and checks that the properties run on the others (``noxfile.py``)."""
    scale = float(os.environ.get("SIXMM_HYPOTHESIS_SCALE", "") or 1)
    if scale == 1:
        return
    for item in items:
        obj = getattr(item, "obj", None)
        fn = getattr(obj, "__func__", obj)  # a method's function carries the settings
        own = getattr(fn, "_hypothesis_internal_use_settings", None)
        if own is None or getattr(fn, "_sixmm_scaled", False):
            continue  # not a property test, or one parametrized copy already scaled it
        fn._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
            own, max_examples=max(10, int(own.max_examples * scale))
        )
        fn._sixmm_scaled = True  # type: ignore[union-attr]
