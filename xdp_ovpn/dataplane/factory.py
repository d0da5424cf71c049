"""The one place that picks a data path: `--data-path auto|xdp|socket`.

`auto` takes XDP when this machine and build can run it, else the socket path, and says
which in the log. The XDP path plugs in here behind the same DataPlane API.
"""

from __future__ import annotations

import logging
import socket

from xdp_ovpn.dataplane.api import DataPlane, DataPlaneError
from xdp_ovpn.dataplane.socketpath import SocketDataPlane

DATA_PATHS = ("auto", "xdp", "socket")


def xdp_unavailable() -> str | None:
    """Why the XDP data path cannot run here, or None when it can."""
    return "the XDP data path is not available in this build yet"


def open_dataplane(
    kind: str,
    sock: socket.socket,
    *,
    single_peer: bool,
    replay_window: int,
    replay_time: float,
    log: logging.Logger,
) -> DataPlane:
    """Start the chosen data path on the bound UDP socket."""
    if kind not in DATA_PATHS:
        raise DataPlaneError(f"unknown data path {kind!r} (auto, xdp or socket)")
    if kind in ("auto", "xdp"):
        reason = xdp_unavailable()
        if kind == "xdp" and reason:
            raise DataPlaneError(f"--data-path xdp: {reason}")
        if reason:
            log.info("Data path: socket (XDP unavailable: %s)", reason)
    else:
        log.info("Data path: socket (as requested)")
    return SocketDataPlane(sock, single_peer=single_peer, replay_window=replay_window,
                           replay_time=replay_time)
