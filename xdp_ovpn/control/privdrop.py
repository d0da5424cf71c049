"""`user` / `group`: give up root once the sockets, TUN, BPF maps and files are open.

As openvpn does (platform.c): supplementary groups first, then the group, then the user,
so no step needs a privilege the previous one gave away. `keep` names capabilities the
calling thread holds on to (capabilities.py): the server's netlink thread keeps
CAP_NET_ADMIN to add and remove iroute kernel routes while clients come and go (openvpn's
DCO mode needs the same), and with the XDP data path what it takes to start a
replacement worker (AF_XDP sockets, BPF maps, the UMEM's locked pages).
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Collection
from dataclasses import dataclass

from xdp_ovpn.capabilities import (
    CAP_NET_ADMIN,
    CapabilityError,
    effective,
    switch_group,
    switch_user,
)


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


def drop_privileges(user: str | None, group: str | None,
                    keep: Collection[int] = ()) -> Identity:
    """Switch to `user`/`group` for good; a no-op when neither is set."""
    ident = resolve(user, group)
    if user is None and group is None:
        return ident
    try:
        if user is None:  # only the group changes: capabilities stay as they are
            switch_group(ident.gid)
        else:
            switch_user(ident.uid, ident.gid, keep)
    except PermissionError as exc:
        raise PrivilegeError(f"cannot switch to {user or ''}:{group or ''}: {exc.strerror}") \
            from exc
    except CapabilityError as exc:
        raise PrivilegeError(str(exc)) from exc
    return ident


def has_net_admin() -> bool:
    """Whether CAP_NET_ADMIN is in the calling thread's effective set now."""
    return bool(effective() & (1 << CAP_NET_ADMIN))
