"""Write the small intersphinx inventories in docs/_inventories (the build has no network).

Each lists the objects of the Python and requests docs that sixmm's docs refer to, in the
Sphinx inventory format (version 2). Run it again after referring to a new one:
``python docs/make_inventories.py``.
"""

from __future__ import annotations

import os
import zlib
from typing import List, Tuple

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_inventories")

PYTHON: List[Tuple[str, str, str]] = [
    # name, role, uri ($ = the name as anchor)
    *[(n, "py:class", "library/functions.html#$") for n in ("int", "float", "str", "bool")],
    *[(n, "py:class", "library/stdtypes.html#$") for n in ("dict", "list", "tuple", "bytes")],
    ("object", "py:class", "library/functions.html#$"),
    ("None", "py:data", "library/constants.html#$"),
    *[
        (n, "py:exception", "library/exceptions.html#$")
        for n in (
            "Exception",
            "BaseException",
            "ValueError",
            "RuntimeError",
            "ConnectionError",
            "PermissionError",
            "BufferError",
            "KeyboardInterrupt",
            "TimeoutError",
        )
    ],
    ("decimal.Decimal", "py:class", "library/decimal.html#$"),
    ("threading.Thread", "py:class", "library/threading.html#$"),
    ("threading.Event", "py:class", "library/threading.html#$"),
    ("logging.Logger", "py:class", "library/logging.html#$"),
    ("logging.getLogger", "py:function", "library/logging.html#$"),
    ("enum.Enum", "py:class", "library/enum.html#$"),
    *[
        (f"typing.{n}", "py:data", "library/typing.html#$")
        for n in ("Any", "Optional", "Callable", "Dict", "List", "Tuple", "Sequence", "Union")
    ],
    ("os.PathLike", "py:class", "library/os.html#$"),
]

REQUESTS: List[Tuple[str, str, str]] = [
    ("requests.Session", "py:class", "api/#$"),
    ("requests.Response", "py:class", "api/#$"),
    ("requests.RequestException", "py:exception", "api/#$"),
]


def write(path: str, project: str, version: str, entries: List[Tuple[str, str, str]]) -> None:
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n# Version: {version}\n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    body = "".join(f"{name} {role} 1 {uri} -\n" for name, role, uri in entries)
    with open(path, "wb") as f:
        f.write(header.encode() + zlib.compress(body.encode()))


if __name__ == "__main__":
    os.makedirs(HERE, exist_ok=True)
    write(os.path.join(HERE, "python.inv"), "Python", "3", PYTHON)
    write(os.path.join(HERE, "requests.inv"), "Requests", "2", REQUESTS)
