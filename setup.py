"""Builds the native engine, xdp_ovpn._native (native/*.c against OpenSSL's libcrypto).

Everything else about the package is in pyproject.toml. XDP_OVPN_NATIVE_CFLAGS replaces the
optimisation flags (the sanitizer build of tests/dataplane/test_native_sanitizers.py).
"""

import os
import runpy
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).parent
FLAGS = os.environ.get("XDP_OVPN_NATIVE_CFLAGS", "-O2").split()
# The build remembers its sources: the engine refuses a build older than them.
DIGEST = runpy.run_path(str(HERE / "xdp_ovpn/dataplane/nativesrc.py"))["sources_digest"](
    HERE / "native")

setup(
    ext_modules=[
        Extension(
            "xdp_ovpn._native",
            sources=sorted(str(p.relative_to(HERE)) for p in (HERE / "native").glob("*.c")),
            depends=sorted(str(p.relative_to(HERE)) for p in (HERE / "native").glob("*.h")),
            libraries=["crypto"],
            define_macros=[("XO_SOURCES_DIGEST", f'"{DIGEST}"')],
            extra_compile_args=[*FLAGS, "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            extra_link_args=FLAGS,  # -fsanitize=... must link its runtime too
        )
    ],
)
