"""Packet-id sender and replay window (semantics of openvpn's packet_id.c, UDP mode)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xdp_ovpn.proto.constants import PACKET_ID_MAX, PACKET_ID_RENEG_THRESHOLD
from xdp_ovpn.proto.errors import PacketIdExhausted
from xdp_ovpn.proto.pktid import PacketIdSender, ReplayWindow


def accept(w: ReplayWindow, pid: int, now: float = 0.0) -> bool:
    """What the data channel does: check, then record (authentication assumed)."""
    if not w.check(pid, now):
        return False
    w.update(pid, now)
    return True


def test_sender_starts_at_one_and_counts_up() -> None:
    s = PacketIdSender()
    assert [s.next() for _ in range(3)] == [1, 2, 3]


def test_sender_signals_renegotiation_then_exhausts() -> None:
    s = PacketIdSender()
    s.last = PACKET_ID_RENEG_THRESHOLD - 2
    s.next()
    assert not s.needs_renegotiation
    s.next()
    assert s.needs_renegotiation and not s.exhausted
    s.last = PACKET_ID_MAX - 1
    assert s.next() == PACKET_ID_MAX
    assert s.exhausted
    with pytest.raises(PacketIdExhausted, match="exhausted"):
        s.next()
    assert s.last == PACKET_ID_MAX  # never wraps to 0


def test_in_order_ids_pass_and_replays_are_counted() -> None:
    w = ReplayWindow()
    assert all(accept(w, i) for i in range(1, 100))
    assert not accept(w, 50)
    assert not accept(w, 99)
    assert w.replayed == 2 and w.rejected == 2
    assert accept(w, 100)


def test_zero_id_is_invalid() -> None:
    w = ReplayWindow()
    assert not w.check(0, 0.0)
    accept(w, 5)
    assert not w.check(0, 0.0)
    assert w.invalid == 2


def test_reordering_within_window_accepted_once() -> None:
    w = ReplayWindow(size=64)
    assert accept(w, 100)
    assert accept(w, 37)  # 63 below the highest: last slot of the window
    assert not accept(w, 37)
    assert not accept(w, 36)  # 64 below: outside
    assert (w.replayed, w.too_old) == (1, 1)


def test_jump_beyond_window_forgets_old_ids() -> None:
    w = ReplayWindow(size=8)
    for i in range(1, 6):
        accept(w, i)
    assert accept(w, 1000)
    assert not accept(w, 5)
    assert accept(w, 995)
    assert w.too_old == 1


def test_check_does_not_change_state() -> None:
    w = ReplayWindow()
    accept(w, 10)
    for _ in range(3):
        assert w.check(11, 0.0)
        assert w.check(9, 0.0)
    assert w.highest == 10
    assert accept(w, 9) and accept(w, 11)


def test_reordered_packet_too_old_in_time_is_rejected() -> None:
    w = ReplayWindow(size=64, time_window=15)
    for i in range(1, 11):
        accept(w, i, now=0.0)
    accept(w, 12, now=0.0)  # 11 is missing
    accept(w, 13, now=18.0)
    # 12 arrived more than 15 s ago: 11 (below it) may no longer arrive...
    assert not w.check(11, now=20.0)
    assert w.expired == 1
    # ...but within the time window it would have been fine.
    w2 = ReplayWindow(size=64, time_window=15)
    for i in (1, 2, 4):
        accept(w2, i, now=0.0)
    assert accept(w2, 3, now=10.0)


def test_time_window_zero_disables_time_check() -> None:
    w = ReplayWindow(size=64, time_window=0)
    accept(w, 1, now=0.0)
    accept(w, 3, now=0.0)
    assert accept(w, 2, now=1000.0)


def test_time_marks_stay_bounded_and_track_arrival_times() -> None:
    w = ReplayWindow(time_window=15)
    for i in range(1, 2000):
        if i % 10:
            accept(w, i, now=float(i))  # id i arrives at i seconds; multiples of 10 are lost
    assert len(w._marks) <= 20
    assert not w.check(1980, now=2000.0)  # 1981 arrived 19 s ago
    assert w.check(1990, now=2000.0)  # 1991 arrived 9 s ago
    assert w.expired == 1


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(size=0)
    with pytest.raises(ValueError):
        ReplayWindow(time_window=-1)


@given(
    st.integers(min_value=1, max_value=128),
    st.lists(st.integers(min_value=0, max_value=400), max_size=300),
)
def test_window_matches_reference_model(size: int, ids: list[int]) -> None:
    """Without time limits: accept iff nonzero, unseen and less than `size` below the highest."""
    w = ReplayWindow(size=size, time_window=0)
    seen: set[int] = set()
    highest = 0
    for pid in ids:
        expected = pid != 0 and pid not in seen and highest - pid < size
        assert accept(w, pid) == expected, pid
        if expected:
            seen.add(pid)
            highest = max(highest, pid)
    assert w.highest == highest
