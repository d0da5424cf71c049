"""Linux capabilities across the switch away from root (`user`/`group`).

Capabilities belong to a thread: after setuid only a thread that asked to keep them
(PR_SET_KEEPCAPS) still has them permitted, and it has to make them effective again
(capset). The control plane keeps a few in its netlink thread; data-plane workers keep
only what their loop needs. A process forked by a thread starts with that thread's set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from collections.abc import Collection

CAP_NET_ADMIN = 12  # routes, links, XDP attach
CAP_NET_RAW = 13  # AF_XDP sockets
CAP_IPC_LOCK = 14  # the UMEM's pinned pages beyond RLIMIT_MEMLOCK
CAP_BPF = 39  # BPF map updates where unprivileged bpf() is off (kernels before 6.5)
PR_SET_KEEPCAPS = 8
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class CapabilityError(Exception):
    """The kernel refused a capability change: one line."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def keep_across_setuid() -> None:
    """Let the calling thread keep its permitted set through the next setuid."""
    if _libc().prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
        raise CapabilityError("cannot keep capabilities across setuid (prctl)")


def restrict_to(caps: Collection[int]) -> None:
    """Make exactly `caps` permitted and effective for the calling thread."""
    low = sum(1 << c for c in caps if c < 32)
    high = sum(1 << (c - 32) for c in caps if c >= 32)
    header = ctypes.create_string_buffer(struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0), 8)
    data = ctypes.create_string_buffer(struct.pack("=IIIIII", low, low, 0, high, high, 0), 24)
    if _libc().capset(header, data) != 0:
        names = ", ".join(str(c) for c in sorted(caps))
        raise CapabilityError(f"cannot keep capabilities {names}: "
                              f"{os.strerror(ctypes.get_errno())}")


def switch_group(gid: int) -> None:
    """Become gid, with gid as the only supplementary group (not root's)."""
    os.setgroups([gid])
    os.setgid(gid)


def switch_user(uid: int, gid: int, keep: Collection[int] = ()) -> None:
    """Become uid/gid for good, keeping `keep` in the calling thread. Raises
    PermissionError when not allowed, CapabilityError for `keep`."""
    if keep:
        keep_across_setuid()
    switch_group(gid)
    os.setuid(uid)
    if keep:
        restrict_to(keep)


def become(uid: int, gid: int, keep: Collection[int] = ()) -> None:
    """A worker's switch: from root it is switch_user; a process forked by a thread that
    switched already (keeping more) only narrows its capabilities to `keep`."""
    if os.getuid() != uid:
        switch_user(uid, gid, keep)
        return
    if os.getgid() != gid:
        switch_group(gid)
    if uid != 0:
        restrict_to(keep)


def effective() -> int:
    """The calling thread's effective set as a bit mask."""
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0
