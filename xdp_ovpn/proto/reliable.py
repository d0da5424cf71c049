"""The control channel's reliability layer: sequencing, acks and retransmission (reliable.c).

One ReliableLayer serves one key state in both directions. Outgoing messages
are cut into packets no bigger than tls-mtu allows, numbered from 0 (the hard
reset), and kept until acked: at most `send_window` (6) in flight, counted
from the oldest unacked one. A packet is resent when its timer fires, the
timeout doubling each time (from --tls-timeout, 2 s), or early once three
later packets have been acked. Incoming packets are acked (again, if they are
duplicates), buffered up to `recv_window` (12) ahead of the next expected id
and handed out in order. Acks ride on outgoing control packets (up to 4) or
go in ACK_V1 packets (up to 8); slots left over carry recently sent acks
again, as openvpn 2.6 does, so a lost ack costs no retransmission.

Packets in and out are ControlPacket objects; wrapping is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .constants import (
    DEFAULT_TLS_MTU,
    MAX_ACKS_PER_ACK_PACKET,
    MAX_ACKS_PIGGYBACKED,
    PACKET_ID_LEN,
    RELIABLE_RECV_WINDOW,
    RELIABLE_SEND_WINDOW,
    SESSION_ID_LEN,
    Opcode,
)
from .errors import ProtocolError
from .packet import ControlPacket

DEFAULT_TLS_TIMEOUT = 2.0  # --tls-timeout: first retransmission after 2 s
FAST_RETRANSMIT_ACKS = 3  # N_ACK_RETRANSMIT
HARD_RESETS = frozenset(
    {Opcode.HARD_RESET_CLIENT_V2, Opcode.HARD_RESET_SERVER_V2, Opcode.HARD_RESET_CLIENT_V3}
)
# op|kid, session-id, ack count, 4 acks + remote session-id, message packet-id
HEADER_OVERHEAD = (
    1 + SESSION_ID_LEN + 1 + MAX_ACKS_PIGGYBACKED * PACKET_ID_LEN + SESSION_ID_LEN + PACKET_ID_LEN
)


@dataclass
class _InFlight:
    packet_id: int
    opcode: Opcode
    payload: bytes
    next_try: float = 0.0  # 0: not sent yet
    timeout: float = DEFAULT_TLS_TIMEOUT
    later_acks: int = 0


@dataclass
class ReliableStats:
    sent: int = 0
    retransmitted: int = 0
    acks_sent: int = 0
    duplicates: int = 0
    out_of_window: int = 0
    bad_acks: int = 0


@dataclass
class ReliableLayer:
    """Reliability for one key state. `session_id` is ours; set `remote_session_id` once the
    peer's is known (it goes with every ack we send)."""

    session_id: bytes
    key_id: int = 0
    remote_session_id: bytes | None = None
    tls_mtu: int = DEFAULT_TLS_MTU
    wrap_overhead: int = 0
    initial_timeout: float = DEFAULT_TLS_TIMEOUT
    send_window: int = RELIABLE_SEND_WINDOW
    recv_window: int = RELIABLE_RECV_WINDOW
    next_send_id: int = 0
    next_recv_id: int = 0
    stats: ReliableStats = field(default_factory=ReliableStats)

    def __post_init__(self) -> None:
        if self.max_payload < 1:
            raise ValueError("tls-mtu too small for the control packet overhead")
        self._queue: list[tuple[Opcode, bytes]] = []  # waiting for a send-window slot
        self._in_flight: dict[int, _InFlight] = {}
        self._received: dict[int, ControlPacket] = {}
        self._acks: list[int] = []  # to acknowledge, oldest first
        self._recent_acks: list[int] = []  # sent lately, most recent first

    # ---- sending ----

    @property
    def max_payload(self) -> int:
        """Payload bytes that fit one control packet (openvpn counts 4 acks, as here)."""
        return self.tls_mtu - HEADER_OVERHEAD - self.wrap_overhead

    def queue(self, payload: bytes, opcode: Opcode = Opcode.CONTROL_V1) -> None:
        """Queue one message; it is cut into packets of max_payload bytes (an empty one,
        such as a reset, still makes one packet)."""
        step = self.max_payload
        chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        self._queue.extend((opcode, chunk) for chunk in chunks)

    def set_opcode_of_next(self, opcode: Opcode) -> None:
        """Change the opcode of the next packet not yet numbered (CONTROL_WKC_V1)."""
        if self._queue:
            self._queue[0] = (opcode, self._queue[0][1])

    @property
    def queued(self) -> int:
        """Packets waiting for a send-window slot (not numbered yet)."""
        return len(self._queue)

    @property
    def unacked(self) -> int:
        """Packets sent (or numbered) and not yet acknowledged."""
        return len(self._in_flight)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing waiting for an ack (openvpn's reliable_empty)."""
        return not self._queue and not self._in_flight

    def _fill_window(self) -> None:
        while self._queue:
            oldest = min(self._in_flight, default=self.next_send_id)
            if self.next_send_id - oldest >= self.send_window:
                return
            opcode, payload = self._queue.pop(0)
            entry = _InFlight(self.next_send_id, opcode, payload, timeout=self.initial_timeout)
            self._in_flight[self.next_send_id] = entry
            self.next_send_id += 1

    def _take_acks(self, limit: int) -> tuple[int, ...]:
        if self.remote_session_id is None:
            return ()  # an ack names the peer's session: none before we know it
        fresh = self._acks[:limit]
        del self._acks[:limit]
        self._recent_acks = fresh[::-1] + [a for a in self._recent_acks if a not in fresh]
        del self._recent_acks[MAX_ACKS_PER_ACK_PACKET:]
        extra = [a for a in self._recent_acks if a not in fresh][: limit - len(fresh)]
        self.stats.acks_sent += len(fresh)
        return tuple(fresh + extra)

    def _packet(
        self, opcode: Opcode, acks: tuple[int, ...], pid: int | None, payload: bytes
    ) -> ControlPacket:
        return ControlPacket(
            opcode,
            self.key_id,
            self.session_id,
            acks,
            self.remote_session_id if acks else None,
            pid,
            payload,
        )

    def packets_to_send(self, now: float) -> list[ControlPacket]:
        """Everything due now: new and retransmitted packets in id order, then ACK_V1s for
        acks that found no packet to ride on."""
        self._fill_window()
        out: list[ControlPacket] = []
        for pid in sorted(self._in_flight):
            e = self._in_flight[pid]
            if e.next_try > now and e.later_acks < FAST_RETRANSMIT_ACKS:
                continue
            if e.next_try:
                self.stats.retransmitted += 1
                e.timeout *= 2
            self.stats.sent += 1
            e.next_try = now + e.timeout
            e.later_acks = 0
            acks = self._take_acks(MAX_ACKS_PIGGYBACKED)
            out.append(self._packet(e.opcode, acks, pid, e.payload))
        while self._acks and self.remote_session_id is not None:
            acks = self._take_acks(MAX_ACKS_PER_ACK_PACKET)
            out.append(self._packet(Opcode.ACK_V1, acks, None, b""))
        return out

    def next_timeout(self) -> float | None:
        """When the next retransmission falls due, or None with nothing in flight.

        New messages and pending acks are sent by the next packets_to_send() call."""
        tries = [e.next_try for e in self._in_flight.values() if e.next_try]
        return min(tries, default=None)

    # ---- receiving ----

    def receive(self, packet: ControlPacket) -> bool:
        """Take acks and a message from an unwrapped packet of this key state.

        Returns True if its message is new and buffered for received(); duplicates are
        acked again, packets too far ahead dropped unacked. Acks naming another session
        raise ProtocolError."""
        if packet.acks:
            if packet.remote_session_id != self.session_id:
                self.stats.bad_acks += 1
                raise ProtocolError("ack for another session")
            for acked in packet.acks:
                if self._in_flight.pop(acked, None) is not None:
                    for e in self._in_flight.values():
                        if e.packet_id < acked:
                            e.later_acks += 1
        if packet.opcode == Opcode.ACK_V1 or packet.packet_id is None:
            return False
        pid = packet.packet_id
        if packet.opcode in HARD_RESETS and pid != 0:
            return False  # a reset is always message 0 (ssl.c ignores others)
        if pid >= self.next_recv_id + self.recv_window:
            self.stats.out_of_window += 1
            return False
        if pid not in self._acks and len(self._acks) < MAX_ACKS_PER_ACK_PACKET:
            self._acks.append(pid)
        if pid < self.next_recv_id or pid in self._received:
            self.stats.duplicates += 1
            return False
        self._received[pid] = packet
        return True

    def received(self) -> list[ControlPacket]:
        """Messages now deliverable in order (each exactly once)."""
        out: list[ControlPacket] = []
        while self.next_recv_id in self._received:
            out.append(self._received.pop(self.next_recv_id))
            self.next_recv_id += 1
        return out

    @property
    def acks_pending(self) -> bool:
        return bool(self._acks)
