"""The long-form packet-id and its replay window, shared by tls-auth and tls-crypt."""

import pytest

from xdp_ovpn.proto.constants import PACKET_ID_MAX
from xdp_ovpn.proto.errors import ParseError, ReplayError
from xdp_ovpn.proto.wrapping import (
    LONG_PACKET_ID,
    LongPacketIdReplay,
    LongPacketIdSender,
    NoWrap,
    peek_header,
)


def accept(r: LongPacketIdReplay, counter: int, time: int = 100, now: float = 0.0) -> None:
    r.accept(LONG_PACKET_ID.pack(counter, time), now)


def test_sender_counts_from_one_with_a_fixed_time() -> None:
    s = LongPacketIdSender()
    assert LONG_PACKET_ID.unpack(s.next(1234.7)) == (1, 1234)
    assert LONG_PACKET_ID.unpack(s.next(9999.0)) == (2, 1234)


def test_sender_restarts_counter_with_a_later_time_at_the_end() -> None:
    s = LongPacketIdSender(start=PACKET_ID_MAX - 1)
    assert LONG_PACKET_ID.unpack(s.next(50.0)) == (PACKET_ID_MAX, 50)
    assert LONG_PACKET_ID.unpack(s.next(50.0)) == (1, 51)


def test_duplicate_rejected() -> None:
    r = LongPacketIdReplay()
    accept(r, 1)
    with pytest.raises(ReplayError):
        accept(r, 1)


def test_reordering_inside_the_window_accepted_once() -> None:
    r = LongPacketIdReplay(window=8)
    for c in (1, 5, 3, 2, 4, 8):
        accept(r, c)
    for c in (3, 8):
        with pytest.raises(ReplayError):
            accept(r, c)
    accept(r, 7)


def test_packet_behind_the_window_rejected() -> None:
    r = LongPacketIdReplay(window=8)
    accept(r, 20)
    with pytest.raises(ReplayError):
        accept(r, 12)
    accept(r, 13)


def test_packet_id_zero_rejected() -> None:
    with pytest.raises(ReplayError):
        accept(LongPacketIdReplay(), 0)


def test_time_backwards_rejected_and_forward_resets_window() -> None:
    r = LongPacketIdReplay()
    accept(r, 10, time=100)
    with pytest.raises(ReplayError):
        accept(r, 11, time=99)
    accept(r, 1, time=101)  # a sender restart: new time, counter from 1
    accept(r, 2, time=101)
    with pytest.raises(ReplayError):
        accept(r, 11, time=100)


def test_gap_closes_after_the_time_window() -> None:
    r = LongPacketIdReplay(window=64, time_window=15)
    accept(r, 1, now=0.0)
    accept(r, 3, now=1.0)
    accept(r, 2, now=10.0)  # late but within 15 s of packet 3
    accept(r, 5, now=11.0)
    with pytest.raises(ReplayError):
        accept(r, 4, now=30.0)  # packet 5 arrived more than 15 s ago


def test_check_does_not_record() -> None:
    r = LongPacketIdReplay()
    r.check(5, 100, 0.0)
    r.check(5, 100, 0.0)
    r.record(5, 100, 0.0)
    with pytest.raises(ReplayError):
        r.check(5, 100, 0.0)


def test_no_wrap_and_peek_header() -> None:
    pkt = bytes.fromhex("38 0102030405060708 00 00000000")
    assert NoWrap().unwrap(NoWrap().wrap(pkt, 0.0), 0.0) == pkt
    assert peek_header(pkt)[2] == bytes.fromhex("0102030405060708")
    with pytest.raises(ParseError):
        peek_header(pkt[:5])
    with pytest.raises(ParseError):
        NoWrap().unwrap(pkt[:5], 0.0)
