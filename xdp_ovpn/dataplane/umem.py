"""The UMEM: one anonymous mapping cut into equal frames that AF_XDP rings point into.

Frame addresses are byte offsets into the mapping. The kernel writes received
packets `XDP_PACKET_HEADROOM` (256) bytes into a frame in copy mode, so an RX
descriptor's address is `frame base + 256 + headroom`; the fill ring accepts any
address inside a frame (it is masked down to the frame base).
"""

from __future__ import annotations

import ctypes
import mmap

XDP_PACKET_HEADROOM = 256
FRAME_SIZES = (2048, 4096)  # aligned chunk mode: a power of two, at most a page


class Umem:
    """A frame_count × frame_size anonymous mapping plus a memoryview of it."""

    def __init__(self, frame_count: int = 4096, frame_size: int = 2048, headroom: int = 0) -> None:
        if frame_size not in FRAME_SIZES:
            raise ValueError(f"frame size {frame_size} not one of {FRAME_SIZES}")
        if frame_count <= 0:
            raise ValueError(f"frame count {frame_count} must be positive")
        if not 0 <= headroom <= frame_size - XDP_PACKET_HEADROOM - 128:
            raise ValueError(f"headroom {headroom} leaves no room for a packet")
        self.frame_count = frame_count
        self.frame_size = frame_size
        self.headroom = headroom
        self.size = frame_count * frame_size
        # Shared, so a fork never turns the pinned pages copy-on-write under the kernel's feet.
        flags = mmap.MAP_SHARED | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
        self._mem: mmap.mmap | None = mmap.mmap(-1, self.size, flags=flags)
        # One ctypes export for the address: dropped in close() before the munmap.
        self._anchor: ctypes.Array | None = (ctypes.c_char * self.size).from_buffer(self._mem)
        self.address = ctypes.addressof(self._anchor)
        self.view: memoryview = memoryview(self._mem)

    def frames(self) -> list[int]:
        """The base address of every frame."""
        return list(range(0, self.size, self.frame_size))

    def frame(self, addr: int, length: int | None = None) -> memoryview:
        """A view of `length` bytes at addr (default: up to the end of its frame)."""
        if length is None:
            length = self.frame_size - (addr % self.frame_size)
        return self.view[addr : addr + length]

    def close(self) -> bool:
        """Unmap; False if frame views are still alive (then the GC unmaps it later)."""
        if self._mem is None:
            return True
        self._anchor = None
        try:
            self.view.release()
            self._mem.close()
        except BufferError:
            return False
        self._mem = None
        return True
