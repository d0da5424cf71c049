"""`user` / `group`: give up root once the sockets, TUN, BPF maps and files are open.

As openvpn does (platform.c): supplementary groups first, then the group, then the user,
so no step needs a privilege the previous one gave away. With `keep_net_admin` the
process keeps CAP_NET_ADMIN across the switch (capset after PR_SET_KEEPCAPS), which the
server needs to add and remove iroute kernel routes while clients come and go; openvpn's
DCO mode needs the same.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import grp
import os
import pwd
import struct
from dataclasses import dataclass

PR_SET_KEEPCAPS = 8
CAP_NET_ADMIN = 12
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(Exception):
    """The user or group does not exist, or the switch failed: one line."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    user: str | None
    group: str | None


def resolve(user: str | None, group: str | None) -> Identity:
    """Look the names up now (before any chroot-like change makes /etc unreadable)."""
    uid, gid = os.getuid(), os.getgid()
    if user is not None:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise PrivilegeError(f"user: no such user {user!r}") from None
        uid = entry.pw_uid
        if group is None:
            gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"group: no such group {group!r}") from None
    return Identity(uid, gid, user, group)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _keep_net_admin() -> None:
    """Make CAP_NET_ADMIN permitted and effective again after setuid dropped it."""
    libc = _libc()
    header = struct.pack("=Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    bit = 1 << CAP_NET_ADMIN
    data = struct.pack("=III", bit, bit, 0) + struct.pack("=III", 0, 0, 0)  # effective, permitted
    hbuf = ctypes.create_string_buffer(header, len(header))
    dbuf = ctypes.create_string_buffer(data, len(data))
    if libc.capset(hbuf, dbuf) != 0:
        err = ctypes.get_errno()
        raise PrivilegeError(f"cannot keep CAP_NET_ADMIN: {os.strerror(err)}")


def drop_privileges(user: str | None, group: str | None, keep_net_admin: bool = False) -> Identity:
    """Switch to `user`/`group` for good; a no-op when neither is set."""
    ident = resolve(user, group)
    if user is None and group is None:
        return ident
    try:
        keep = keep_net_admin and user is not None
        if keep and _libc().prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
            raise PrivilegeError("cannot keep capabilities across setuid (prctl)")
        # Supplementary groups: only the target group, not root's.
        os.setgroups([ident.gid])
        os.setgid(ident.gid)
        if user is not None:
            os.setuid(ident.uid)
    except PermissionError as exc:
        raise PrivilegeError(f"cannot switch to {user or ''}:{group or ''}: {exc.strerror}") \
            from exc
    if keep_net_admin and user is not None:
        _keep_net_admin()
    return ident


def has_net_admin() -> bool:
    """Whether CAP_NET_ADMIN is in the effective set now (from /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << CAP_NET_ADMIN))
    return False
