"""Kernel feature probes for `xdp-ovpn doctor` and for the loader's own choices."""

from __future__ import annotations

import ctypes
import os
from functools import cache
from pathlib import Path
from typing import Any

from xdp_ovpn.loader.attach import attach
from xdp_ovpn.loader.compile import compile_bpf, load_xdp
from xdp_ovpn.loader.errors import AttachError, LoaderError

BPFFS = Path("/sys/fs/bpf")
_PASS = "int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }"


@cache
def _pass_program() -> Any:
    """Compiled once per process: the doctor probes two modes with it."""
    return compile_bpf(_PASS)


def probe_xdp_attach(ifname: str, mode: str) -> str:
    """Attach a trivial XDP_PASS program in `mode` to ifname, then detach it.

    Works in whatever network namespace the calling process is in. Returns how it attached:
    "BPF link" (Linux 5.9+: dies with its owner) or "netlink" (older: may outlive it).
    Raises AttachError.
    """
    try:
        prog_fd = load_xdp(_pass_program(), "xdp_pass")
    except LoaderError as exc:
        raise AttachError(f"cannot build the probe program: {exc}") from exc
    attachment = attach(prog_fd, ifname, mode)
    how = "netlink" if attachment.link_fd is None else "BPF link"
    attachment.close()
    return how


def btf_available() -> bool:
    return Path("/sys/kernel/btf/vmlinux").is_file()


def bpffs_mounted(path: Path = BPFFS) -> bool:
    """True if a bpf filesystem is mounted exactly at path (in this mount namespace)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    target = str(path.resolve()) if path.exists() else str(path)
    return any(
        len(f) > 2 and f[2] == "bpf" and f[1] == target for f in (ln.split() for ln in mounts)
    )


def mount_bpffs(path: Path = BPFFS) -> None:
    """Mount bpffs at path (no-op if already there); raises LoaderError."""
    if bpffs_mounted(path):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    path.mkdir(parents=True, exist_ok=True)
    if libc.mount(b"bpf", os.fsencode(path), b"bpf", 0, b"mode=0700") != 0:
        err = ctypes.get_errno()
        raise LoaderError(f"cannot mount bpffs at {path}: {os.strerror(err)}")
