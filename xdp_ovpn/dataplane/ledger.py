"""The packet-id ledger: shared memory that outlives a data-plane worker.

Per key slot it holds the highest packet-id reserved. A sender reserves ids in blocks
there before it uses them, so a worker that replaces a dead one starts above every id
its predecessor may have sent: no nonce is ever used twice.
"""

from __future__ import annotations

import mmap

from xdp_ovpn.dataplane.api import DataPlaneError
from xdp_ovpn.proto.errors import PacketIdExhausted
from xdp_ovpn.proto.pktid import PACKET_ID_MAX, PacketIdSender

LEDGER_SLOTS = 8192  # key slots alive at once (two per peer): 32 KiB, fixed at startup
PID_BLOCK = 1 << 16  # packet-ids reserved per ledger write; a restart skips at most this


class Ledger:
    """Shared memory (survives the worker): per key slot, the highest packet-id reserved."""

    def __init__(self, slots: int = LEDGER_SLOTS) -> None:
        self._mem = mmap.mmap(-1, slots * 4, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.ids = memoryview(self._mem).cast("I")
        self._free = list(range(slots - 1, -1, -1))

    def allocate(self) -> int:
        if not self._free:
            raise DataPlaneError("too many keys installed at once")
        index = self._free.pop()
        self.ids[index] = 0
        return index

    def release(self, index: int) -> None:
        self._free.append(index)

    def close(self) -> None:
        self.ids.release()
        self._mem.close()


class LedgerSender(PacketIdSender):
    """A packet-id sender that reserves ids in the ledger before it hands them out."""

    __slots__ = ("ids", "index", "reserved")

    def __init__(self, ids: memoryview, index: int) -> None:
        super().__init__()
        self.ids, self.index = ids, index
        self.last = self.reserved = ids[index]  # a restarted worker goes on above it

    def next(self) -> int:
        return self.take(1)

    def take(self, count: int) -> int:
        last = self.last + count
        if last > self.reserved:
            if last > PACKET_ID_MAX:
                raise PacketIdExhausted("packet-id space exhausted: the key must be renegotiated")
            self.reserved = min(last + PID_BLOCK, PACKET_ID_MAX)
            self.ids[self.index] = self.reserved
        first, self.last = self.last + 1, last
        return first
