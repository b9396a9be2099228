"""Metadata lives in setup.cfg; this file adds the optional C extension.

``sixmm.protocol._bookside`` speeds up the order book (see sixmm/protocol/book.py). It is
optional: without a compiler the build warns and sixmm installs pure Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sixmm.protocol._bookside",
            sources=["sixmm/protocol/_bookside.c"],
            optional=True,
        )
    ],
    # the .c ships in the sdist (MANIFEST.in), not inside the installed package
    exclude_package_data={"sixmm.protocol": ["*.c"]},
)
