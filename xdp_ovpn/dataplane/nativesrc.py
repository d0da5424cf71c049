"""Which sources a native engine build came from: a digest of native/*.c and *.h.

setup.py compiles the digest into xdp_ovpn._native (SOURCES_DIGEST); where the sources sit
beside the package (a checkout, an editable install), the engine compares it with the
digest of the files there, so a build older than its sources is refused in one line rather
than failing later on a missing function. Standard library only: setup.py runs this file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

NATIVE_DIR = Path(__file__).resolve().parents[2] / "native"


def sources_digest(native_dir: Path | None = None) -> str | None:
    """sha256 over the sources' names and bytes; None where there are no sources."""
    native_dir = native_dir or NATIVE_DIR
    files = sorted([*native_dir.glob("*.c"), *native_dir.glob("*.h")])
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
