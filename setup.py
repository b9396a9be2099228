"""Metadata lives in setup.cfg; this file adds the optional C extensions.

``sixmm.protocol._bookside`` speeds up the order book (see sixmm/protocol/book.py) and
``sixmm.protocol._depthfast`` the depth level validation (see sixmm/protocol/depth.py),
``sixmm.protocol._recfast`` the recording writer (see sixmm/recording.py),
``sixmm.protocol._wirefast`` decoding frames and trades (see sixmm/protocol/frames.py and
models.py). All
are optional: without a compiler the build warns and sixmm installs pure Python.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sixmm.protocol._bookside",
            sources=["sixmm/protocol/_bookside.c"],
            optional=True,
        ),
        Extension(
            "sixmm.protocol._depthfast",
            sources=["sixmm/protocol/_depthfast.c"],
            depends=["sixmm/protocol/_numeral.h"],
            optional=True,
        ),
        Extension(
            "sixmm.protocol._wirefast",
            sources=["sixmm/protocol/_wirefast.c"],
            depends=["sixmm/protocol/_numeral.h"],
            optional=True,
        ),
        Extension(
            "sixmm.protocol._recfast",
            sources=["sixmm/protocol/_recfast.c"],
            optional=True,
        ),
    ],
    # the .c ships in the sdist (MANIFEST.in), not inside the installed package
    exclude_package_data={"sixmm.protocol": ["*.c", "*.h"]},
)
