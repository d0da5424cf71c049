"""AF_XDP sockets in pure Python: UMEM registration, the four rings, bind, batch ring ops.

The rings are memory shared with the kernel, read and written through
memoryview casts of their mmaps. Batches move through C-level slice copies
(`tolist()`, slice assignment from an `array`), so a batch of N descriptors
costs a handful of Python operations, not N. Ordering: CPython performs each
index access as a plain load or store in program order, which on x86 (TSO) is
exactly the acquire/release the ring protocol needs. Other architectures
would need real barriers: this module is x86-only as written.

Lifetime: `close()` releases every view, unmaps the rings and the UMEM and
closes the fd. The kernel frees the buffer pool asynchronously afterwards, so
binding the same queue again right away fails with EBUSY for about 0.2 s;
`XskSocket` retries EBUSY for `busy_timeout` seconds (default 2) before
giving up.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import errno
import mmap
import os
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from xdp_ovpn.dataplane.umem import Umem

# include/uapi/linux/if_xdp.h
AF_XDP = 44
SOL_XDP = 283
XDP_MMAP_OFFSETS = 1
XDP_RX_RING = 2
XDP_TX_RING = 3
XDP_UMEM_REG = 4
XDP_UMEM_FILL_RING = 5
XDP_UMEM_COMPLETION_RING = 6
XDP_STATISTICS = 7
XDP_OPTIONS = 8
XDP_OPTIONS_ZEROCOPY = 1
XDP_SHARED_UMEM = 1
XDP_COPY = 2
XDP_ZEROCOPY = 4
XDP_USE_NEED_WAKEUP = 8
XDP_RING_NEED_WAKEUP = 1
XDP_PGOFF_RX_RING = 0
XDP_PGOFF_TX_RING = 0x80000000
XDP_UMEM_PGOFF_FILL_RING = 0x100000000
XDP_UMEM_PGOFF_COMPLETION_RING = 0x180000000

_MMAP_OFFSETS = struct.Struct("16Q")  # rx, tx, fr, cr × {producer, consumer, desc, flags}
_UMEM_REG = struct.Struct("QQIIII")  # addr, len, chunk_size, headroom, flags, tx_metadata_len
_STATISTICS_FIELDS = (
    "rx_dropped",
    "rx_invalid_descs",
    "tx_invalid_descs",
    "rx_ring_full",
    "rx_fill_ring_empty_descs",
    "tx_ring_empty_descs",
)
_DESC_SIZE = 16  # struct xdp_desc {u64 addr; u32 len; u32 options}
_ADDR_SIZE = 8  # fill and completion rings hold bare u64 addresses
_U32 = 0xFFFFFFFF
_SMALL_BATCH = 4
_ANON_TABLE = 192  # where an anonymous ring's table starts (after three cache lines)

MODES = ("auto", "zero-copy", "copy")


class XskError(Exception):
    """An AF_XDP socket could not be set up or used; the message is one line."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


@dataclass(frozen=True)
class XskStats:
    """XDP_STATISTICS; fields a kernel does not report are 0."""

    rx_dropped: int = 0
    rx_invalid_descs: int = 0
    tx_invalid_descs: int = 0
    rx_ring_full: int = 0
    rx_fill_ring_empty_descs: int = 0
    tx_ring_empty_descs: int = 0


class _SockaddrXdp(ctypes.Structure):
    _fields_ = (
        ("family", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("ifindex", ctypes.c_uint32),
        ("queue_id", ctypes.c_uint32),
        ("shared_umem_fd", ctypes.c_uint32),
    )


_libc = ctypes.CDLL(None, use_errno=True)


def _bind(fd: int, ifindex: int, queue: int, flags: int) -> None:
    addr = _SockaddrXdp(AF_XDP, flags, ifindex, queue, 0)
    if _libc.bind(fd, ctypes.byref(addr), ctypes.sizeof(addr)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _Ring:
    """One mmapped ring: producer/consumer words, flags and the descriptor array."""

    def __init__(self, fd: int, pgoff: int, size: int, offsets: Sequence[int], entry: int) -> None:
        producer, consumer, desc, flags = offsets
        self.size = size
        self.mask = size - 1
        self.mm = mmap.mmap(
            fd,
            desc + size * entry,
            flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0),
            prot=mmap.PROT_READ | mmap.PROT_WRITE,
            offset=pgoff,
        )
        whole = memoryview(self.mm)
        self.words = whole.cast("I")
        self.prod = producer // 4
        self.cons = consumer // 4
        self.flags = flags // 4
        table = whole[desc : desc + size * entry]
        self.q = table.cast("Q")  # addresses: every u64 (fill/comp) or every other u64 (descs)
        self.d = table.cast("I")  # descriptor lengths: u32 index 4*i + 2
        self._views = (self.q, self.d, table, self.words, whole)

    @classmethod
    def anonymous(cls, size: int, entry: int) -> _Ring:
        """A ring in anonymous memory with the kernel's layout (producer, consumer and flags
        words on their own cache lines, then the table): the RX or fill ring of a stand-in
        AF_XDP socket, for benchmarks and tests that play the kernel's side."""
        ring = cls.__new__(cls)
        ring.size, ring.mask = size, size - 1
        ring.mm = mmap.mmap(-1, _ANON_TABLE + size * entry)
        whole = memoryview(ring.mm)
        ring.words = whole.cast("I")
        ring.prod, ring.cons, ring.flags = 0, 16, 32  # bytes 0, 64, 128
        table = whole[_ANON_TABLE : _ANON_TABLE + size * entry]
        ring.q, ring.d = table.cast("Q"), table.cast("I")
        ring._views = (ring.q, ring.d, table, ring.words, whole)
        return ring

    def needs_wakeup(self) -> bool:
        return bool(self.words[self.flags] & XDP_RING_NEED_WAKEUP)

    # Slot i of a table lives at view[stride * i + skip]: fill/completion addresses use
    # (q, 1, 0); descriptors use (q, 2, 0) for addresses and (d, 4, 2) for lengths.

    def take(self, view: memoryview, stride: int, skip: int, start: int, n: int) -> list[int]:
        """Read n slots from index start (wrapping) as a list, in one or two C copies."""
        if n == 1:  # the common light-load case: plain indexing beats slicing 3:1
            return [view[stride * start + skip]]
        end = start + n
        if end <= self.size:
            return view[stride * start + skip : stride * end : stride].tolist()
        head = view[stride * start + skip :: stride].tolist()
        return head + view[skip : stride * (end - self.size) : stride].tolist()

    def put(
        self, view: memoryview, stride: int, skip: int, start: int, values: Sequence[int]
    ) -> None:
        """Write values into consecutive slots from index start (wrapping)."""
        n = len(values)
        if n <= _SMALL_BATCH:  # building an array costs more than a few item stores
            mask = self.mask
            for i, value in enumerate(values):
                view[stride * ((start + i) & mask) + skip] = value
            return
        values = array.array(view.format, values)
        end = start + n
        if end <= self.size:
            view[stride * start + skip : stride * end : stride] = values
        else:
            first = self.size - start
            view[stride * start + skip :: stride] = values[:first]
            view[skip : stride * (end - self.size) : stride] = values[first:]

    def consumable(self, max_n: int) -> tuple[int, int]:
        """(consumer index, how many entries to take, at most max_n)."""
        cons = self.words[self.cons]
        return cons, min((self.words[self.prod] - cons) & _U32, max_n)

    def producible(self, want: int) -> tuple[int, int]:
        """(producer index, how many of `want` entries fit)."""
        prod = self.words[self.prod]
        return prod, min(want, self.size - ((prod - self.words[self.cons]) & _U32))

    def close(self) -> None:
        for view in self._views:
            view.release()
        self._views = ()
        self.mm.close()


class XskSocket:
    """One AF_XDP socket bound to (ifname, queue) with its own UMEM and all four rings.

    mode: "auto" tries zero-copy and falls back to copy on EOPNOTSUPP (veth does);
    `self.mode` says which one is bound. RX addresses handed out by `rx_batch` belong
    to the caller until they go back through `fill` (or out through `tx_submit`).
    """

    def __init__(
        self,
        ifname: str,
        queue: int = 0,
        *,
        mode: str = "auto",
        frame_count: int = 4096,
        frame_size: int = 2048,
        headroom: int = 0,
        rx_size: int = 2048,
        tx_size: int = 2048,
        fill_size: int = 4096,
        comp_size: int = 2048,
        need_wakeup: bool = True,
        busy_timeout: float = 2.0,
    ) -> None:
        if mode not in MODES:
            raise XskError(f"unknown AF_XDP mode {mode!r} (one of {', '.join(MODES)})")
        for what, size in (("rx", rx_size), ("tx", tx_size), ("fill", fill_size),
                           ("completion", comp_size)):  # fmt: skip
            if size < 0 or size & (size - 1) or (size == 0 and what in ("fill", "completion")):
                raise XskError(f"{what} ring size {size} is not a power of two")
        if not rx_size and not tx_size:
            raise XskError("an AF_XDP socket needs an RX or a TX ring")
        try:
            self.ifindex = socket.if_nametoindex(ifname)
        except OSError:
            raise XskError(f"no interface {ifname} in this network namespace") from None
        self.ifname = ifname
        self.queue = queue
        self._sizes = (rx_size, tx_size, fill_size, comp_size)
        self._sock: socket.socket | None = None
        self._rings: list[_Ring] = []
        self._rx: _Ring | None = None
        self._tx: _Ring | None = None
        try:
            self.umem = Umem(frame_count, frame_size, headroom)
        except ValueError as exc:
            raise XskError(str(exc)) from None
        wakeup = XDP_USE_NEED_WAKEUP if need_wakeup else 0
        try:
            if mode in ("auto", "zero-copy"):
                try:
                    self._setup(XDP_ZEROCOPY | wakeup, busy_timeout)
                except XskError as exc:
                    if mode == "zero-copy" or exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    self._teardown_socket()  # a failed bind may leave the rings half-owned
                    self._setup(XDP_COPY | wakeup, busy_timeout)
            else:
                self._setup(XDP_COPY | wakeup, busy_timeout)
        except BaseException:
            self.close()
            raise
        self.mode = "zero-copy" if self._options() & XDP_OPTIONS_ZEROCOPY else "copy"

    # -- setup ----------------------------------------------------------------

    def _setup(self, bind_flags: int, busy_timeout: float) -> None:
        rx_size, tx_size, fill_size, comp_size = self._sizes
        try:
            sock = socket.socket(AF_XDP, socket.SOCK_RAW, 0)
        except OSError as exc:
            raise _error("create an AF_XDP socket", exc) from None
        self._sock = sock
        fd = sock.fileno()
        u = self.umem
        reg = _UMEM_REG.pack(u.address, u.size, u.frame_size, u.headroom, 0, 0)
        step = "register the UMEM"
        try:
            sock.setsockopt(SOL_XDP, XDP_UMEM_REG, reg)
            step = "size the rings"
            sock.setsockopt(SOL_XDP, XDP_UMEM_FILL_RING, fill_size)
            sock.setsockopt(SOL_XDP, XDP_UMEM_COMPLETION_RING, comp_size)
            if rx_size:
                sock.setsockopt(SOL_XDP, XDP_RX_RING, rx_size)
            if tx_size:
                sock.setsockopt(SOL_XDP, XDP_TX_RING, tx_size)
            step = "read the ring offsets"
            raw = sock.getsockopt(SOL_XDP, XDP_MMAP_OFFSETS, _MMAP_OFFSETS.size)
            if len(raw) != _MMAP_OFFSETS.size:
                raise OSError(errno.EPROTO, "kernel too old: ring offsets without flags")
            off = _MMAP_OFFSETS.unpack(raw)
            step = "map the rings"
            if rx_size:
                self._rx = _Ring(fd, XDP_PGOFF_RX_RING, rx_size, off[0:4], _DESC_SIZE)
                self._rings.append(self._rx)
            if tx_size:
                # An RX-only socket has none: in copy mode every poll() would otherwise try
                # to transmit from the empty TX ring.
                self._tx = _Ring(fd, XDP_PGOFF_TX_RING, tx_size, off[4:8], _DESC_SIZE)
                self._rings.append(self._tx)
            self._fr = _Ring(fd, XDP_UMEM_PGOFF_FILL_RING, fill_size, off[8:12], _ADDR_SIZE)
            self._rings.append(self._fr)
            self._cr = _Ring(fd, XDP_UMEM_PGOFF_COMPLETION_RING, comp_size, off[12:16], _ADDR_SIZE)
            self._rings.append(self._cr)
            step = f"bind to {self.ifname} queue {self.queue}"
            deadline = time.monotonic() + busy_timeout
            while True:
                try:
                    _bind(fd, self.ifindex, self.queue, bind_flags)
                    break
                except OSError as exc:
                    # The previous socket's pool is freed by a kernel worker: wait it out.
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        except OSError as exc:
            raise _error(step, exc) from None

    def _options(self) -> int:
        try:
            return struct.unpack("I", self._sock.getsockopt(SOL_XDP, XDP_OPTIONS, 4))[0]
        except OSError:
            return 0

    # -- RX -------------------------------------------------------------------

    def rx_batch(self, max_n: int = 64) -> tuple[list[int], list[int]]:
        """Take up to max_n received descriptors: (addresses, lengths), consumed from the ring."""
        r = self._rx
        if r is None:
            raise XskError("this AF_XDP socket has no RX ring")
        cons, n = r.consumable(max_n)
        if not n:
            return [], []
        start = cons & r.mask
        addrs = r.take(r.q, 2, 0, start, n)
        lens = r.take(r.d, 4, 2, start, n)
        r.words[r.cons] = (cons + n) & _U32
        return addrs, lens

    def rx_available(self) -> int:
        r = self._rx
        if r is None:
            return 0
        return (r.words[r.prod] - r.words[r.cons]) & _U32

    def fill(self, addrs: Sequence[int]) -> int:
        """Give frames to the kernel for RX; return how many fit (the rest stay the caller's)."""
        return _produce_addrs(self._fr, addrs)

    def fill_free(self) -> int:
        r = self._fr
        return r.size - ((r.words[r.prod] - r.words[r.cons]) & _U32)

    def fill_needs_wakeup(self) -> bool:
        return self._fr.needs_wakeup()

    def wakeup_rx(self) -> None:
        """Nudge the driver to refill RX (zero-copy with need_wakeup); cheap no-op in copy mode."""
        if self._fr.needs_wakeup():
            with contextlib.suppress(BlockingIOError, InterruptedError):
                self._sock.recv(0, socket.MSG_DONTWAIT)

    # -- TX -------------------------------------------------------------------

    def tx_submit(self, addrs: Sequence[int], lens: Sequence[int]) -> int:
        """Queue frames (address, length) for transmission; return how many fit. Call kick()."""
        r = self._tx
        if r is None:
            raise XskError("this AF_XDP socket has no TX ring")
        prod, n = r.producible(len(addrs))
        if n <= 0:
            return 0
        start = prod & r.mask
        r.put(r.q, 2, 0, start, addrs[:n] if n < len(addrs) else addrs)
        r.put(r.d, 4, 2, start, lens[:n] if n < len(lens) else lens)
        r.words[r.prod] = (prod + n) & _U32
        return n

    def kick(self) -> None:
        """Tell the kernel TX has work (only when it asked: need_wakeup)."""
        if self._tx is None or not self._tx.needs_wakeup():
            return
        try:
            self._sock.send(b"", socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            # EBUSY / ENOBUFS: the kernel is still draining; the next kick retries.
            if exc.errno not in (errno.EBUSY, errno.ENOBUFS):
                raise _error("kick TX", exc) from None

    def complete(self, max_n: int = 4096) -> list[int]:
        """Addresses of transmitted frames, back in the caller's hands."""
        r = self._cr
        cons, n = r.consumable(max_n)
        if not n:
            return []
        out = r.take(r.q, 1, 0, cons & r.mask, n)
        r.words[r.cons] = (cons + n) & _U32
        return out

    def tx_pending(self) -> int:
        r = self._tx
        if r is None:
            return 0
        return (r.words[r.prod] - r.words[r.cons]) & _U32

    # -- frames, stats, lifetime -----------------------------------------------

    def frame(self, addr: int, length: int | None = None) -> memoryview:
        """A view into the UMEM at addr (drop it before close)."""
        return self.umem.frame(addr, length)

    def statistics(self) -> XskStats:
        try:
            raw = self._sock.getsockopt(SOL_XDP, XDP_STATISTICS, 8 * len(_STATISTICS_FIELDS))
        except OSError as exc:
            raise _error("read statistics", exc) from None
        values = struct.unpack(f"{len(raw) // 8}Q", raw)
        return XskStats(**dict(zip(_STATISTICS_FIELDS, values, strict=False)))

    def fileno(self) -> int:
        if self._sock is None:
            raise XskError("AF_XDP socket is closed")
        return self._sock.fileno()

    @property
    def closed(self) -> bool:
        return self._sock is None

    def _teardown_socket(self) -> None:
        for ring in self._rings:
            ring.close()
        self._rings.clear()
        self._rx = self._tx = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> bool:
        """Unmap rings and UMEM and close; False if frame views kept the UMEM mapped."""
        self._teardown_socket()
        umem = getattr(self, "umem", None)
        return umem.close() if umem is not None else True

    def __enter__(self) -> XskSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else getattr(self, "mode", "binding")
        return f"<XskSocket {self.ifname}:{self.queue} {state}>"


def _produce_addrs(r: _Ring, addrs: Sequence[int]) -> int:
    prod, n = r.producible(len(addrs))
    if n <= 0:
        return 0
    r.put(r.q, 1, 0, prod & r.mask, addrs[:n] if n < len(addrs) else addrs)
    r.words[r.prod] = (prod + n) & _U32
    return n


def _error(step: str, exc: OSError) -> XskError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    hint = ""
    if exc.errno == errno.EOPNOTSUPP and "bind" in step:
        hint = " (driver has no zero-copy AF_XDP)"
    elif exc.errno == errno.EBUSY:
        hint = " (queue still held by another AF_XDP socket)"
    return XskError(f"cannot {step}: {reason}{hint}", exc.errno)


def probe_afxdp(ifname: str, queue: int = 0) -> str:
    """Bind a throwaway socket to ifname/queue: "zero-copy" or "copy"; XskError if neither."""
    with XskSocket(ifname, queue, frame_count=64, rx_size=64, tx_size=64, fill_size=64,
                   comp_size=64) as xsk:  # fmt: skip
        return xsk.mode
