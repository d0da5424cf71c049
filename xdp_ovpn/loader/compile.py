"""Compile BPF C with bcc against the discovered kernel headers."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from xdp_ovpn.loader.errors import CompileError
from xdp_ovpn.loader.headers import find_kernel_headers

# The C sources ship as package data beside this module; clang reads them (and their
# #includes) from the file system, so the package must be installed as plain files.
BPF_DIR = Path(str(resources.files("xdp_ovpn.loader") / "bpf"))


def import_bcc() -> ModuleType:
    """The bcc module (Debian's python3-bpfcc); CompileError when it is not importable.

    Code outside the loader asks here, so that the loader stays the only importer of bcc.
    """
    try:
        import bcc
    except ImportError as exc:
        raise CompileError(f"bcc is not importable (install Debian's python3-bpfcc): {exc}") \
            from exc
    return bcc


def compile_bpf(source: str | Path, cflags: Iterable[str] = ()) -> Any:
    """Compile C text (or a .c file) into a loaded `bcc.BPF`; takes 2-3 s, so keep the result.

    Raises CompileError with the first compiler error line, HeadersNotFound without headers.
    """
    BPF = import_bcc().BPF
    if isinstance(source, Path):
        try:
            text = source.read_text()
        except OSError as exc:
            raise CompileError(f"cannot read {source}: {exc.strerror}") from exc
    else:
        text = source
    headers = find_kernel_headers()
    os.environ["BCC_KERNEL_SOURCE"] = str(headers.path)
    flags = [*cflags, f"-I{BPF_DIR}"]
    with _captured_stderr() as log:
        try:
            return BPF(text=text.encode(), cflags=flags)
        except Exception as exc:  # bcc raises bare Exception for compile and load failures
            reason = _first_error(log.read_text(errors="replace")) or str(exc).splitlines()[0]
            raise CompileError(reason) from exc


def load_xdp(bpf: Any, name: str) -> int:
    """Load function `name` of a compiled module as an XDP program; its fd.

    The verifier runs here: its complaint becomes a one-line CompileError.
    """
    from bcc import BPF

    with _captured_stderr() as log:
        try:
            return bpf.load_func(name.encode(), BPF.XDP).fd
        except Exception as exc:  # bcc raises bare Exception; the reason is in the log
            reason = _first_error(log.read_text(errors="replace")) or str(exc)
            raise CompileError(f"verifier rejected {name}: {reason}") from exc


def _first_error(log: str) -> str | None:
    """The first clang error or verifier complaint, in one line."""
    for line in log.splitlines():
        if re.search(r"\berror:", line):
            return re.sub(r"^/virtual/main\.c:", "line ", line.strip())
    # The verifier log: instruction dumps ("12: (61) ...", "; source") then its complaint.
    noise = re.compile(r"^(\d+:|;|processed |bpf: |verification time|stack depth)")
    for line in log.splitlines():
        if line.strip() and not noise.match(line.strip()):
            return line.strip()
    return None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Path]:
    """clang and the verifier log straight to fd 2: catch it, show it only on failure."""
    with tempfile.NamedTemporaryFile(prefix="xdp-ovpn-bcc-", suffix=".log") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield Path(tmp.name)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
