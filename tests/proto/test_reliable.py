"""The reliability layer: windows, backoff, acks, and seeded lossy-link simulations."""

import random

import pytest

from xdp_ovpn.proto.constants import Opcode
from xdp_ovpn.proto.errors import ProtocolError
from xdp_ovpn.proto.packet import ControlPacket, decode_control, encode_control
from xdp_ovpn.proto.reliable import HEADER_OVERHEAD, ReliableLayer
from xdp_ovpn.proto.statickey import StaticKey
from xdp_ovpn.proto.tls_crypt import TLSCrypt

A_SID = bytes.fromhex("aaaaaaaaaaaaaaaa")
B_SID = bytes.fromhex("bbbbbbbbbbbbbbbb")


def pair(**kwargs: object) -> tuple[ReliableLayer, ReliableLayer]:
    a = ReliableLayer(A_SID, remote_session_id=B_SID, **kwargs)  # type: ignore[arg-type]
    b = ReliableLayer(B_SID, remote_session_id=A_SID, **kwargs)  # type: ignore[arg-type]
    return a, b


def ctl(pid: int, acks: tuple[int, ...] = (), payload: bytes = b"x") -> ControlPacket:
    return ControlPacket(Opcode.CONTROL_V1, 0, B_SID, acks, A_SID if acks else None, pid, payload)


def ack(*ids: int) -> ControlPacket:
    return ControlPacket(Opcode.ACK_V1, 0, B_SID, ids, A_SID)


def test_messages_are_cut_to_fit_tls_mtu() -> None:
    a = ReliableLayer(A_SID, tls_mtu=1250, wrap_overhead=40)
    assert a.max_payload == 1250 - HEADER_OVERHEAD - 40
    a.queue(bytes(3000))
    pkts = a.packets_to_send(0.0)
    assert [len(p.payload) for p in pkts] == [
        a.max_payload,
        a.max_payload,
        3000 - 2 * a.max_payload,
    ]
    assert [p.packet_id for p in pkts] == [0, 1, 2]
    # Wrapped with tls-crypt and 4 piggybacked acks the largest packet still fits 1250 bytes.
    full = ControlPacket(Opcode.CONTROL_V1, 0, A_SID, (1, 2, 3, 4), B_SID, 0, pkts[0].payload)
    assert len(TLSCrypt(StaticKey(bytes(256)), True).wrap(encode_control(full), 0.0)) == 1250


def test_empty_message_is_one_packet() -> None:
    a = ReliableLayer(A_SID)
    a.queue(b"", Opcode.HARD_RESET_CLIENT_V2)
    (p,) = a.packets_to_send(0.0)
    assert (p.opcode, p.packet_id, p.payload, p.acks) == (Opcode.HARD_RESET_CLIENT_V2, 0, b"", ())


def test_send_window_counts_from_oldest_unacked() -> None:
    a = ReliableLayer(A_SID, remote_session_id=B_SID)
    for i in range(10):
        a.queue(bytes([i]))
    assert [p.packet_id for p in a.packets_to_send(0.0)] == [0, 1, 2, 3, 4, 5]
    a.receive(ack(3, 4))
    assert a.packets_to_send(0.1) == []  # 0 is still unacked: 6 would be 6 ahead of it
    a.receive(ack(0))
    assert [p.packet_id for p in a.packets_to_send(0.2)] == [6]
    a.receive(ack(1, 2))
    assert [p.packet_id for p in a.packets_to_send(0.3)] == [7, 8, 9]  # oldest is now 5
    assert a.unacked == 5


def test_exponential_backoff() -> None:
    a = ReliableLayer(A_SID, initial_timeout=2.0)
    a.queue(b"hello")
    sent_at = []
    now = 0.0
    while now < 40:
        if a.packets_to_send(now):
            sent_at.append(now)
        timeout = a.next_timeout()
        assert timeout is not None
        now = timeout
    assert sent_at == [0.0, 2.0, 6.0, 14.0, 30.0]
    assert a.stats.retransmitted == 4


def test_three_later_acks_trigger_early_retransmit() -> None:
    a = ReliableLayer(A_SID, remote_session_id=B_SID)
    for i in range(5):
        a.queue(bytes([i]))
    a.packets_to_send(0.0)
    a.receive(ack(1, 2))
    assert a.packets_to_send(0.5) == []
    a.receive(ack(3))
    assert [p.packet_id for p in a.packets_to_send(0.5)] == [0]  # before its 2 s timer


def test_acks_piggyback_up_to_four_and_ack_v1_up_to_eight() -> None:
    a = ReliableLayer(A_SID, remote_session_id=B_SID)
    for pid in range(10):
        a.receive(ctl(pid))
    assert len(a.received()) == 10
    a.queue(b"reply")
    pkts = a.packets_to_send(0.0)
    assert pkts[0].opcode == Opcode.CONTROL_V1 and pkts[0].acks == (0, 1, 2, 3)
    assert pkts[0].remote_session_id == B_SID
    # Only 8 acks are held (openvpn's RELIABLE_ACK_SIZE): the rest go in one ACK_V1 of 4 plus
    # 4 recently sent ones again.
    assert [p.opcode for p in pkts[1:]] == [Opcode.ACK_V1]
    assert pkts[1].acks[:4] == (4, 5, 6, 7) and len(pkts[1].acks) == 8
    assert a.stats.acks_sent == 8
    for p in pkts:
        assert decode_control(encode_control(p)) == p


def test_recent_acks_fill_free_slots() -> None:
    a = ReliableLayer(A_SID, remote_session_id=B_SID)
    a.receive(ctl(0))
    (first,) = a.packets_to_send(0.0)
    assert first.acks == (0,)
    a.queue(b"later")
    (p,) = a.packets_to_send(1.0)
    assert p.acks == (0,)  # sent again in case the first ACK_V1 was lost


def test_duplicates_are_acked_again_and_delivered_once() -> None:
    a = ReliableLayer(A_SID, remote_session_id=B_SID)
    assert a.receive(ctl(0, payload=b"m0"))
    assert [p.payload for p in a.received()] == [b"m0"]
    a.packets_to_send(0.0)
    assert not a.receive(ctl(0, payload=b"m0"))
    assert a.stats.duplicates == 1
    (p,) = a.packets_to_send(1.0)
    assert p.opcode == Opcode.ACK_V1 and p.acks[0] == 0
    assert a.received() == []


def test_out_of_order_is_buffered_and_far_ahead_dropped_unacked() -> None:
    a = ReliableLayer(A_SID, remote_session_id=B_SID)
    assert a.receive(ctl(2, payload=b"m2"))
    assert a.received() == []
    assert not a.receive(ctl(12))  # 0 + receive window 12: would not fit
    assert a.stats.out_of_window == 1
    a.receive(ctl(1, payload=b"m1"))
    a.receive(ctl(0, payload=b"m0"))
    assert [p.payload for p in a.received()] == [b"m0", b"m1", b"m2"]
    assert a.packets_to_send(0.0)[0].acks == (2, 1, 0)


def test_acks_for_another_session_rejected() -> None:
    a = ReliableLayer(A_SID, remote_session_id=B_SID)
    a.queue(b"x")
    a.packets_to_send(0.0)
    with pytest.raises(ProtocolError):
        a.receive(ControlPacket(Opcode.ACK_V1, 0, B_SID, (0,), bytes(8)))
    assert a.unacked == 1


def test_reset_with_nonzero_packet_id_ignored_and_no_acks_before_peer_known() -> None:
    a = ReliableLayer(A_SID)
    reset = ControlPacket(Opcode.HARD_RESET_SERVER_V2, 0, B_SID, (), None, 3)
    assert not a.receive(reset)
    assert a.receive(ControlPacket(Opcode.HARD_RESET_SERVER_V2, 0, B_SID, (), None, 0))
    assert a.packets_to_send(0.0) == []  # no remote session-id yet: cannot ack
    a.remote_session_id = B_SID
    assert a.packets_to_send(0.0)[0].acks == (0,)


class LossyLink:
    """One direction of a seeded, lossy, duplicating, reordering datagram link."""

    def __init__(self, rng: random.Random, loss: float, dup: float, jitter: float) -> None:
        self.rng, self.loss, self.dup, self.jitter = rng, loss, dup, jitter
        self.flight: list[tuple[float, int, bytes]] = []
        self.seq = 0

    def send(self, datagram: bytes, now: float) -> None:
        for _ in range(2 if self.rng.random() < self.dup else 1):
            if self.rng.random() >= self.loss:
                self.seq += 1
                arrival = now + 0.01 + self.rng.random() * self.jitter
                self.flight.append((arrival, self.seq, datagram))

    def arrived(self, now: float) -> list[bytes]:
        self.flight.sort()
        out = [d for t, _, d in self.flight if t <= now]
        self.flight = [f for f in self.flight if f[0] > now]
        return out


def simulate(seed: int, loss: float, dup: float, jitter: float) -> None:
    rng = random.Random(seed)
    a, b = pair(initial_timeout=1.0)
    messages = {id(a): [], id(b): []}
    for side in (a, b):
        for _ in range(rng.randrange(5, 25)):
            msg = rng.randbytes(rng.randrange(1, 4000))
            messages[id(side)].append(msg)
            side.queue(msg)
    got = {id(a): bytearray(), id(b): bytearray()}
    links = {id(a): LossyLink(rng, loss, dup, jitter), id(b): LossyLink(rng, loss, dup, jitter)}
    peer = {id(a): b, id(b): a}
    now = 0.0
    while now < 1e9 and not (a.idle and b.idle and not a.acks_pending and not b.acks_pending):
        for side in (a, b):
            for p in side.packets_to_send(now):
                assert len(p.acks) <= (8 if p.opcode == Opcode.ACK_V1 else 4)
                assert side.unacked <= 6
                links[id(side)].send(encode_control(p), now)
        for side in (a, b):
            for wire in links[id(peer[id(side)])].arrived(now):
                side.receive(decode_control(wire))
            for p in side.received():
                got[id(side)] += p.payload
        # Jump to the next arrival or retransmission timer.
        events = [f[0] for link in links.values() for f in link.flight]
        events += [t for t in (a.next_timeout(), b.next_timeout()) if t is not None]
        if a.acks_pending or b.acks_pending:
            events.append(now)
        now = max(now + 0.01, min(events, default=now + 0.01))
    assert bytes(got[id(b)]) == b"".join(messages[id(a)])
    assert bytes(got[id(a)]) == b"".join(messages[id(b)])


@pytest.mark.parametrize("seed", range(20))
def test_simulation_with_loss_duplication_and_reordering(seed: int) -> None:
    simulate(seed, loss=0.3, dup=0.15, jitter=0.5)


@pytest.mark.parametrize("seed", range(10))
def test_simulation_heavy_loss(seed: int) -> None:
    simulate(100 + seed, loss=0.45, dup=0.05, jitter=2.0)


def test_simulation_perfect_link() -> None:
    simulate(7, loss=0.0, dup=0.0, jitter=0.0)
