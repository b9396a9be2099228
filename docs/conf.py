"""Sphinx configuration of the sixmm documentation (``nox -s docs`` or ``.ci/run`` builds it)."""

from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))

import sixmm

project = "sixmm"
author = "the sixmm authors"
copyright = "2026, the sixmm authors"
release = version = sixmm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_inventories", "README.md"]
html_theme = "furo"
html_title = f"sixmm {release}"
html_static_path: list = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
autoclass_content = "both"

# Intersphinx without the network: small inventories shipped in docs/_inventories (made by
# docs/make_inventories.py) stand in for the published objects.inv files, so links to the
# Python and requests docs resolve and nothing is fetched.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", os.path.join("_inventories", "python.inv")),
    "requests": (
        "https://requests.readthedocs.io/en/latest",
        os.path.join("_inventories", "requests.inv"),
    ),
}
intersphinx_timeout = 1

myst_heading_anchors = 3
# The README is written for GitHub: its links to files outside the docs (samples/, bench/)
# are plain links there, not cross-references.
suppress_warnings = ["myst.xref_missing"]

doctest_global_setup = """
import sixmm
from sixmm.sandbox import Sandbox
"""


_LITERAL_THEN_LETTER = re.compile(r"(?<![`\w])(``[^`\s]+``)(?=[A-Za-z])")


def _plural_literals(
    app: object, what: str, name: str, obj: object, options: object, lines: list
) -> None:
    """Docstrings say ``eventType``s; reST needs an escaped space after the literal."""
    lines[:] = [_LITERAL_THEN_LETTER.sub(r"\1\\ ", line) for line in lines]


def setup(app: object) -> None:
    app.connect("autodoc-process-docstring", _plural_literals)  # type: ignore[attr-defined]
