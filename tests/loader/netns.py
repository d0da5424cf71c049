"""Test helpers: run code inside a lab namespace in-process, send raw frames, a tiny AF_XDP RX.

The tiny AF_XDP socket only binds and counts what arrives; it stands in until the data plane's
xdp_ovpn/dataplane/xsk.py is committed (same method names: fill, rx_available, fileno, close).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import socket
import struct
from collections.abc import Iterator

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
AF_XDP, SOL_XDP = 44, 283
XDP_MMAP_OFFSETS, XDP_RX_RING, XDP_UMEM_REG, XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING = (
    1, 2, 4, 5, 6,
)  # fmt: skip
XDP_PGOFF_RX_RING, XDP_UMEM_PGOFF_FILL_RING = 0, 0x100000000
XDP_COPY = 2
FRAMES, FRAME_SIZE = 4096, 2048


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


class TinyXsk:
    """An AF_XDP socket in copy mode with a UMEM, a fill ring and an RX ring: RX counting only."""

    def __init__(self, ifname: str, queue: int = 0) -> None:
        self._sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        self.umem = mmap.mmap(-1, FRAMES * FRAME_SIZE)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.umem))
        s = self._sock
        s.setsockopt(SOL_XDP, XDP_UMEM_REG, struct.pack("=QQIIII", addr, FRAMES * FRAME_SIZE,
                                                        FRAME_SIZE, 0, 0, 0))  # fmt: skip
        for opt in (XDP_UMEM_FILL_RING, XDP_UMEM_COMPLETION_RING, XDP_RX_RING):
            s.setsockopt(SOL_XDP, opt, FRAMES)
        off = struct.unpack("=16Q", s.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, 128))
        rx_prod, fr_prod, fr_desc = off[0], off[8], off[10]
        self._rx = mmap.mmap(s.fileno(), off[2] + FRAMES * 16, offset=XDP_PGOFF_RX_RING)
        self._fr = mmap.mmap(s.fileno(), fr_desc + FRAMES * 8, offset=XDP_UMEM_PGOFF_FILL_RING)
        self._rx_prod = rx_prod
        for i in range(FRAMES):  # every frame to the kernel for RX
            struct.pack_into("=Q", self._fr, fr_desc + 8 * i, i * FRAME_SIZE)
        struct.pack_into("=I", self._fr, fr_prod, FRAMES)
        sxdp = struct.pack("=HHIII", AF_XDP, XDP_COPY, socket.if_nametoindex(ifname), queue, 0)
        buf = ctypes.create_string_buffer(sxdp, len(sxdp))
        if _libc.bind(s.fileno(), buf, len(sxdp)) != 0:  # Python's bind rejects AF_XDP
            err = ctypes.get_errno()
            self.close()
            raise OSError(err, f"AF_XDP bind: {os.strerror(err)}")

    def fileno(self) -> int:
        return self._sock.fileno()

    def rx_available(self) -> int:
        """Frames the kernel delivered so far (nothing is consumed here)."""
        return struct.unpack_from("=I", self._rx, self._rx_prod)[0]

    def close(self) -> None:
        for m in (getattr(self, "_rx", None), getattr(self, "_fr", None)):
            if m is not None:
                m.close()
        self._sock.close()
        with contextlib.suppress(BufferError):
            self.umem.close()
