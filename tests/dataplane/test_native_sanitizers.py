"""The native engine's unit and differential tests again, against a build of the extension
with AddressSanitizer and UndefinedBehaviorSanitizer: any report fails the test. The build
goes to a directory keyed by the sources' hash (a rerun reuses it); the stock interpreter
loads the sanitizer runtimes first (LD_PRELOAD) and the sanitized module in place of the
installed one. No root."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANITIZE = ("-fsanitize=address,undefined -fno-sanitize-recover=undefined "
            "-fno-omit-frame-pointer -g -O1")
TESTS = ["tests/dataplane/test_native_units.py", "tests/dataplane/test_native_differential.py",
         "tests/dataplane/test_native_shared.py", "tests/dataplane/test_engine.py"]
# Load the sanitized module as xdp_ovpn._native, then run the tests in this process.
BOOT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("xdp_ovpn._native", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["xdp_ovpn._native"] = module
import pytest
sys.exit(pytest.main(["-q", "-x", "-p", "no:cacheprovider", *sys.argv[2:]]))
"""


def _runtime(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    if not os.path.isabs(path):
        pytest.skip(f"gcc has no {name}")
    return path


@pytest.fixture(scope="module")
def sanitized_module() -> Path:
    sources = [*sorted((ROOT / "native").glob("*.[ch]")), ROOT / "setup.py"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + SANITIZE.encode())
    out = Path(tempfile.gettempdir()) / f"xdp-ovpn-native-asan-{digest.hexdigest()[:16]}"
    built = list(out.glob("xdp_ovpn/_native*.so"))
    if not built:
        env = dict(os.environ, XDP_OVPN_NATIVE_CFLAGS=SANITIZE)
        result = subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out),
             "--build-temp", str(out / "tmp")],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        built = list(out.glob("xdp_ovpn/_native*.so"))
    assert len(built) == 1
    return built[0]


def test_native_tests_pass_under_asan_and_ubsan(sanitized_module: Path) -> None:
    env = dict(
        os.environ,
        LD_PRELOAD=f"{_runtime('libasan.so')} {_runtime('libubsan.so')}",
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
        PYTHONMALLOC="malloc",  # Python objects in malloc memory, where ASAN sees them
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
    )
    result = subprocess.run([sys.executable, "-c", BOOT, str(sanitized_module), *TESTS],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = result.stdout[-4000:] + result.stderr[-4000:]
    assert "AddressSanitizer" not in result.stderr, report
    assert "runtime error" not in result.stderr, report
    assert result.returncode == 0, report
    assert " passed" in result.stdout, report
