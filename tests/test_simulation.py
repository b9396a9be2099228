"""The deterministic simulator (tests/simulation/world.py): thousands of seeded timelines of
faults on a virtual clock, the real engines, book, framing and reconnect policy, invariants
after every step. ``--seeds N`` runs N seeds (default 2,000, or ``SIXMM_SIM_SEEDS``);
``--seed K`` replays one; a failure prints the command that replays it."""

from __future__ import annotations

import os
import traceback
from typing import Any

import pytest

from tests.simulation.world import FAULTS, Violation, World

pytestmark = pytest.mark.simulation


def pytest_generate_tests(metafunc: Any) -> None:
    if "seed" not in metafunc.fixturenames:
        return
    one = metafunc.config.getoption("--seed")
    if one is not None:
        seeds = [one]
    else:
        n = metafunc.config.getoption("--seeds") or int(os.environ.get("SIXMM_SIM_SEEDS", "2000"))
        seeds = list(range(n))
    metafunc.parametrize("seed", seeds)


def _replay(seed: int) -> str:
    return f"python -m pytest tests/test_simulation.py --seed {seed} -p no:cacheprovider"


def test_seed(seed: int) -> None:
    try:
        World(seed).run()
    except Violation as exc:
        pytest.fail(f"{exc}\nreplay: {_replay(seed)}", pytrace=False)
    except Exception:
        pytest.fail(f"crashed:\n{traceback.format_exc()}\nreplay: {_replay(seed)}", pytrace=False)


def test_same_seed_same_timeline() -> None:
    """Deterministic: one seed, one timeline (what makes a failing seed replayable)."""
    a, b = World(7), World(7)
    ra, rb = a.run(), b.run()
    assert ra == rb
    assert a.delivered.keys() == b.delivered.keys()
    for topic in a.delivered:
        assert [repr(x) for x in a.delivered[topic]] == [repr(x) for x in b.delivered[topic]]


def test_every_fault_is_exercised() -> None:
    """Over a few hundred seeds each fault is on in some and off in others."""
    seen = {f: 0 for f in FAULTS}
    for seed in range(200):
        for f in World(seed).faults:
            seen[f] += 1
    assert all(n > 0 for n in seen.values()), seen
    assert all(n < 200 for f, n in seen.items() if f != "split"), seen
