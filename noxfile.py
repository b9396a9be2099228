"""The test matrix: the suite on every CPython sixmm claims, C extensions built on each.

    nox -s tests              # every version (each needs python3.X on PATH)
    nox -s tests-3.9          # one
    nox -s docs               # the Sphinx site, warnings as errors, examples doctested

Why nox and not tox: the matrix needs steps that are code, not configuration (build the C
extensions in place for each interpreter and check they are the ones in use, pass the soak
only to one version, forward pytest arguments), and nox keeps that in one short Python file
with the same ``session.install`` / ``session.run`` on every version. ``.ci/run`` installs the
sessions one after another (``nox --install-only``: the editable installs and in-place builds
write to the checkout) and starts each one's suite (``nox -R``: reuse, no install) as soon as
its install is done, so the five run side by side; ``SIXMM_TEST_WORKERS`` gives a session
pytest-xdist workers (3.11, which runs the most, gets two).

The classifiers in setup.cfg list exactly the versions in :data:`PYTHONS`.
"""

from __future__ import annotations

import os
import shutil

import nox

PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
SOAK_PYTHON = "3.11"  # the 30 s soak runs on one version only (it tests behaviour, not syntax)
DOCS_PYTHON = "3.11"  # current Sphinx needs 3.11+

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = False


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The suite on this interpreter, with the C extensions built for it and required."""
    extras = "test,test-qt" if session.python == SOAK_PYTHON else "test"
    session.install("setuptools>=64")  # for build_ext below (3.12+ venvs come without it)
    session.install("-e", f".[{extras}]")
    # pytest-timeout is a hang guard (60 s a test in setup.cfg); with five suites sharing two
    # cores a CPU-heavy property test can pass 60 s without hanging, so CI scales the guard
    # (the environment variable beats the ini file, and reaches the suites run in children).
    env = {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_TIMEOUT": os.environ.get("PYTEST_TIMEOUT", "180"),
    }
    if shutil.which("cc") is not None and os.environ.get("SIXMM_NO_EXTENSIONS") != "1":
        # in place: the tests import the checkout, and each version's .so has its own tag
        session.run_install("python", "setup.py", "-q", "build_ext", "--inplace", silent=True)
        env["SIXMM_REQUIRE_SPEEDUPS"] = "1"
    args = list(session.posargs)
    if session.python != SOAK_PYTHON:
        # the 30 s soak, the tests marked `slow` (a second full run of the book suites on the
        # other implementation) and the Autobahn cases (a 2.7 fuzzing server, ~20 s) run on one
        # version: they test behaviour, not the version
        args += ["-m", "not soak and not slow and not autobahn"]
        args += ["--deselect", "tests/test_soak.py::test_short_soak_survives_every_fault_kind"]
        # the simulator's 2,000 seeds run on SOAK_PYTHON; 150 here check it runs on this version
        env["SIXMM_SIM_SEEDS"] = os.environ.get("SIXMM_SIM_SEEDS_OTHER", "150")
        # and a quarter of each property test's examples (tests/conftest.py): the five suites
        # share two cores, and the properties are explored in full on SOAK_PYTHON
        env["SIXMM_HYPOTHESIS_SCALE"] = os.environ.get("SIXMM_HYPOTHESIS_SCALE_OTHER", "0.25")
    workers = os.environ.get("SIXMM_TEST_WORKERS", "")
    if workers not in ("", "0", "1"):
        # whole files to each worker (module fixtures stay per file); CI gives 3.11, which runs
        # the most, two so it ends with the other versions (see .ci/run)
        args += ["-n", workers, "--dist", "loadfile"]
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", *args, env=env)


@nox.session(python=DOCS_PYTHON)
def docs(session: nox.Session) -> None:
    """Build the site (warnings are errors), then doctest its examples against the sandbox."""
    session.install("-e", ".[docs,sandbox]")
    out = os.path.join("docs", "_build")
    session.run("sphinx-build", "-W", "--keep-going", "-q", "-b", "html", "docs", f"{out}/html")
    session.run(
        "sphinx-build", "-W", "--keep-going", "-q", "-b", "doctest", "docs", f"{out}/doctest"
    )
