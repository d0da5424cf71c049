"""Test helpers: run code inside a lab namespace in-process, send raw frames, count AF_XDP RX."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator

from xdp_ovpn.dataplane.xsk import XskSocket

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


@contextlib.contextmanager
def inside(ns_name: str) -> Iterator[None]:
    """Run the block in namespace ns_name (this thread), then come back.

    Sockets and BPF attachments made inside stay in that namespace after the block.
    """
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{ns_name}", os.O_RDONLY)
    try:
        _setns(target)
        yield
    finally:
        _setns(home)
        os.close(home)
        os.close(target)


def packet_socket(ifname: str) -> socket.socket:
    """An AF_PACKET socket that sends whole Ethernet frames out of ifname."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    return s


def rx_socket(ifname: str, queue: int = 0) -> XskSocket:
    """An AF_XDP socket on (ifname, queue) with every UMEM frame given to the kernel for RX.

    Nothing is consumed: `rx_available()` then counts every frame delivered so far.
    """
    xsk = XskSocket(ifname, queue, rx_size=4096)
    xsk.fill(xsk.umem.frames())
    return xsk
