"""Control-channel wrapping: the common interface and the long-form packet-id it uses.

tls-auth and tls-crypt put a 64-bit "long form" packet-id (32-bit counter,
then 32-bit time) in front of the control packet and check it against a
replay window after the packet authenticates (crypto.c crypto_check_replay,
packet_id.c). The time half lets a sender restart its counter; a receiver
rejects time going backwards and resets its window when time moves forward.
"""

from __future__ import annotations

import struct
from typing import Protocol

from .constants import (
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    PACKET_ID_MAX,
    SESSION_ID_LEN,
    Opcode,
)
from .errors import ParseError, ReplayError
from .packet import peek_op
from .pktid import ReplayWindow

LONG_PACKET_ID = struct.Struct("!II")  # counter, time
HEADER_LEN = 1 + SESSION_ID_LEN  # op|kid and own session-id, in clear in every mode


class ControlWrapper(Protocol):
    """Wraps encode_control() output for the wire and unwraps it back."""

    overhead: int

    def wrap(self, plain: bytes, now: float) -> bytes: ...

    def unwrap(self, wire: bytes, now: float) -> bytes: ...


class NoWrap:
    """No tls-auth / tls-crypt: control packets go out as they are."""

    overhead = 0

    def wrap(self, plain: bytes, now: float) -> bytes:
        return plain

    def unwrap(self, wire: bytes, now: float) -> bytes:
        if len(wire) < HEADER_LEN:
            raise ParseError("truncated control header")
        return bytes(wire)


def peek_header(wire: bytes | bytearray | memoryview) -> tuple[Opcode, int, bytes]:
    """Opcode, key-id and the sender's session-id: cleartext in every wrapping mode."""
    opcode, key_id = peek_op(wire)
    if len(wire) < HEADER_LEN:
        raise ParseError("truncated control header")
    return opcode, key_id, bytes(wire[1:HEADER_LEN])


class LongPacketIdSender:
    """Hands out (counter, time) pairs; the counter starts after `start`."""

    def __init__(self, start: int = 0) -> None:
        self.counter = start
        self.time: int | None = None

    def next(self, now: float) -> bytes:
        if self.time is None:
            self.time = int(now)
        if self.counter == PACKET_ID_MAX:
            # Long form may restart the counter once time has moved on (packet_id.c).
            self.time = max(self.time + 1, int(now))
            self.counter = 0
        self.counter += 1
        return LONG_PACKET_ID.pack(self.counter, self.time)


class LongPacketIdReplay:
    """Replay protection for (counter, time) packet-ids, as openvpn's packet_id_test: the
    counter goes through pktid.ReplayWindow, which a newer time starts afresh.

    check() and record() are separate so only authenticated packets move the window.
    """

    def __init__(
        self, window: int = DEFAULT_REPLAY_WINDOW, time_window: float = DEFAULT_REPLAY_TIME
    ) -> None:
        self._params = (window, time_window)
        self.time: int | None = None
        self.counters = ReplayWindow(window, time_window)

    def check(self, counter: int, time: int, now: float) -> None:
        """Raise ReplayError if this packet-id must not be accepted."""
        if counter == 0:
            raise ReplayError("packet-id 0")
        if self.time is not None and time < self.time:
            raise ReplayError("packet-id time went backwards")
        if self.time == time and not self.counters.check(counter, now):
            raise ReplayError("replayed or too old packet-id")

    def record(self, counter: int, time: int, now: float) -> None:
        if self.time is None or time > self.time:
            self.time = time
            self.counters = ReplayWindow(*self._params)
        self.counters.update(counter, now)

    def accept(self, packet_id: bytes, now: float) -> None:
        """check() then record() an 8-byte long-form packet-id."""
        counter, time = LONG_PACKET_ID.unpack(packet_id)
        self.check(counter, time, now)
        self.record(counter, time, now)
