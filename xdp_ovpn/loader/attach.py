"""Attach and detach XDP programs: BPF links first, netlink on kernels without them.

A BPF link (Linux 5.9+) detaches when its last fd closes, so a program attached by a process
that dies, even by SIGKILL, is gone with it: nothing ever steers to a dead socket. On older
kernels the netlink attachment persists; `detach` and the next `attach` remove it then.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass
from enum import IntFlag

from xdp_ovpn.loader import syscall
from xdp_ovpn.loader.errors import AttachError


class XdpFlags(IntFlag):
    """XDP_FLAGS_* from include/uapi/linux/if_link.h."""

    UPDATE_IF_NOEXIST = 1
    SKB_MODE = 2
    DRV_MODE = 4


_BUSY = (errno.EBUSY, errno.EEXIST)
MODES = {"native": XdpFlags.DRV_MODE, "generic": XdpFlags.SKB_MODE}


@dataclass
class Attachment:
    """One program on one interface; `close()` (or process death) detaches it."""

    ifname: str
    ifindex: int
    mode: str
    prog_id: int
    link_fd: int | None  # None: netlink attachment on a kernel without XDP links

    def close(self) -> None:
        if self.link_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.link_fd)
            self.link_fd = None
        else:
            with contextlib.suppress(AttachError):
                _netlink_set(self.ifindex, -1, MODES[self.mode])


def ifindex_of(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise AttachError(f"no interface {ifname} in this network namespace") from exc


def attach(prog_fd: int, ifname: str, mode: str) -> Attachment:
    """Attach prog_fd to ifname in "native" or "generic" mode (no silent fallback here)."""
    if mode not in MODES:
        raise AttachError(f"unknown XDP mode {mode!r} (native or generic)")
    ifindex = ifindex_of(ifname)
    flags = MODES[mode]
    try:
        link_fd = syscall.link_create_xdp(prog_fd, ifindex, flags)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
            raise AttachError(_reason(ifname, mode, exc), exc.errno in _BUSY) from exc
        # Kernel without XDP links (< 5.9): netlink, refusing to replace anything.
        _netlink_set(ifindex, prog_fd, flags | XdpFlags.UPDATE_IF_NOEXIST, ifname, mode)
        return Attachment(ifname, ifindex, mode, attached_prog_id(ifindex) or 0, None)
    _, _, prog_id, _ = syscall.link_info(link_fd)
    return Attachment(ifname, ifindex, mode, prog_id, link_fd)


def detach_interface(ifname: str) -> bool:
    """Remove whatever XDP program is on ifname, link or netlink, whoever owns it.

    Returns False if nothing was attached.
    """
    ifindex = ifindex_of(ifname)
    prog_id = attached_prog_id(ifindex)
    if not prog_id:
        return False
    for link_id, link_prog, link_ifindex in syscall.xdp_links():
        # ifindex alone is ambiguous across namespaces; the prog id makes it unique.
        if link_prog == prog_id and link_ifindex == ifindex:
            fd = syscall.link_fd_by_id(link_id)
            try:
                syscall.link_detach(fd)
            except OSError as exc:
                raise AttachError(f"cannot detach link {link_id} on {ifname}: {exc}") from exc
            finally:
                os.close(fd)
            return True
    for flags in (XdpFlags.DRV_MODE, XdpFlags.SKB_MODE):
        with contextlib.suppress(AttachError):
            _netlink_set(ifindex, -1, flags)
    if attached_prog_id(ifindex):
        raise AttachError(f"an XDP program on {ifname} could not be removed")
    return True


def attached_prog_id(ifindex: int) -> int | None:
    """The id of the XDP program on ifindex (any mode), or None."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link("get", index=ifindex)
    xdp = links[0].get_attr("IFLA_XDP") if links else None
    if not xdp:
        return None
    return dict(xdp["attrs"]).get("IFLA_XDP_PROG_ID") or None


def _netlink_set(ifindex: int, prog_fd: int, flags: int, ifname: str = "", mode: str = "") -> None:
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    xdp = {"attrs": [("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", int(flags))]}
    try:
        with IPRoute() as ipr:
            ipr.link("set", index=ifindex, xdp=xdp)
    except NetlinkError as exc:
        why = _reason(ifname or str(ifindex), mode, OSError(exc.code, ""))
        raise AttachError(why, exc.code in _BUSY) from exc


def _reason(ifname: str, mode: str, exc: OSError) -> str:
    why = {
        errno.EBUSY: "another XDP program is already attached",
        errno.EEXIST: "another XDP program is already attached",
        errno.EOPNOTSUPP: f"the driver does not support {mode} XDP",
        errno.EPERM: "permission denied (needs root or CAP_NET_ADMIN + CAP_BPF)",
    }.get(exc.errno or 0, os.strerror(exc.errno or 0))
    return f"cannot attach {mode} XDP to {ifname}: {why}"
