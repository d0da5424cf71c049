"""systemd's readiness protocol (sd_notify), for `Type=notify` units as openvpn uses.

One datagram to $NOTIFY_SOCKET; nothing happens when the variable is unset, so calling it
outside systemd is harmless.
"""

from __future__ import annotations

import os
import socket


def notify(*assignments: str) -> bool:
    """Send e.g. notify("READY=1", "STATUS=...") to systemd; False when not under it."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    if target.startswith("@"):  # abstract namespace
        target = "\0" + target[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(assignments).encode(), target)
    except OSError:
        return False
    return True
