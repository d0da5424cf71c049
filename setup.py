"""Builds the native engine, xdp_ovpn._native (native/*.c against OpenSSL's libcrypto).

Everything else about the package is in pyproject.toml. XDP_OVPN_NATIVE_CFLAGS replaces the
optimisation flags (the sanitizer build of tests/dataplane/test_native_sanitizers.py).
"""

import os
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
FLAGS = os.environ.get("XDP_OVPN_NATIVE_CFLAGS", "-O2").split()

setup(
    ext_modules=[
        Extension(
            "xdp_ovpn._native",
            sources=sorted(str(p.relative_to(HERE)) for p in (HERE / "native").glob("*.c")),
            depends=sorted(str(p.relative_to(HERE)) for p in (HERE / "native").glob("*.h")),
            libraries=["crypto"],
            extra_compile_args=[*FLAGS, "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            extra_link_args=FLAGS,  # -fsanitize=... must link its runtime too
        )
    ],
)
