"""The packet-id ledger: shared memory that outlives a data-plane worker.

Per key slot it holds the highest packet-id reserved. A sender reserves ids in blocks
there before it uses them, so a worker that replaces a dead one starts above every id
its predecessor may have sent: no nonce is ever used twice (the python engine). For a key
in the epoch data format the slot holds its send and receive epochs instead (`track_epochs`).

The native engine instead keeps, per key slot, a block the workers share: the live
packet-id counter and the replay window (`Ledger.slot`; native/pktid.c key_shared), or for
an epoch-format key its send epoch and counter, receive epochs and their windows
(native/epoch.c).
"""

from __future__ import annotations

import contextlib
import mmap

from xdp_ovpn.dataplane.api import DataPlaneError
from xdp_ovpn.proto.epoch import EpochDataChannel
from xdp_ovpn.proto.errors import PacketIdExhausted
from xdp_ovpn.proto.pktid import PACKET_ID_MAX, PacketIdSender

LEDGER_SLOTS = 8192  # key slots alive at once (two per peer): 32 KiB, fixed at startup
PID_BLOCK = 1 << 16  # packet-ids reserved per ledger write; a restart skips at most this


class Ledger:
    """Shared memory (survives the worker): per key slot, the highest packet-id reserved.

    With `key_slot_size` (the native engine's `key_shared_size`) each key slot also has a
    block that several workers share: the native engine keeps the key's live packet-id
    counter and its replay window there (`slot`), so whichever worker sends or receives
    with the key, no id is sent twice nor taken twice. Only touched pages cost memory.
    """

    def __init__(self, slots: int = LEDGER_SLOTS, key_slot_size: int = 0) -> None:
        self._mem = mmap.mmap(-1, slots * 4, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.ids = memoryview(self._mem).cast("I")
        self._free = list(range(slots - 1, -1, -1))
        self._slot_size = key_slot_size
        self._shared = (mmap.mmap(-1, slots * key_slot_size,
                                  flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
                        if key_slot_size else None)
        self._shared_view = memoryview(self._shared) if self._shared is not None else None

    def allocate(self) -> int:
        if not self._free:
            raise DataPlaneError("too many keys installed at once")
        index = self._free.pop()
        self.ids[index] = 0
        if self._shared_view is not None:  # zero: the first worker to install it sets it up
            start = index * self._slot_size
            self._shared_view[start:start + self._slot_size] = bytes(self._slot_size)
        return index

    def slot(self, index: int) -> memoryview | None:
        """The key's block shared by the workers (None without `key_slot_size`)."""
        if self._shared_view is None:
            return None
        start = index * self._slot_size
        return self._shared_view[start:start + self._slot_size]

    def release(self, index: int) -> None:
        self._free.append(index)

    def close(self) -> None:
        self.ids.release()
        self._mem.close()
        if self._shared is not None and self._shared_view is not None:
            self._shared_view.release()
            with contextlib.suppress(BufferError):  # a slot view still held: the GC frees it
                self._shared.close()


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


def track_epochs(channel: EpochDataChannel, ids: memoryview, index: int) -> None:
    """An epoch-format key: ids[index] holds its receive epoch << 16 | its send epoch. A
    worker that replaces a dead one sends in the next epoch, a fresh key with a fresh
    counter, so none of its predecessor's nonces comes again (the peer takes it as a future
    key: it keeps EPOCH_FUTURE_KEYS of them, so as many restarts without a packet in
    between), and receives from the epoch its predecessor had followed the peer to."""
    used = ids[index]
    if used:
        channel.advance_send((used & 0xFFFF) + 1)
        channel.advance_receive(used >> 16)

    def record(send: int, receive: int) -> None:
        ids[index] = receive << 16 | send

    channel.on_epochs = record
    record(channel.send_epoch, channel.receive_epoch)
