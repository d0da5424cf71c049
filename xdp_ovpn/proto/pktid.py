"""Data-channel packet-ids: the sender's counter and the receiver's replay window (packet_id.c).

The sender starts at 1 and never wraps: past PACKET_ID_RENEG_THRESHOLD the key
must be renegotiated, and at PACKET_ID_MAX it is unusable.

The receiver accepts an id once, if it is newer than the highest seen or within
`size` below it, and not older than ids that arrived more than `time_window`
seconds ago (openvpn's --replay-window n t: a reordered packet that shows up after
its newer neighbours have aged out is dropped). `check` is side-effect free apart
from reject counters; `update` records an id and is only called once the packet
has authenticated, so a forged packet cannot move the window.
"""

from __future__ import annotations

from collections import deque

from .constants import (
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    PACKET_ID_MAX,
    PACKET_ID_RENEG_THRESHOLD,
)
from .errors import PacketIdExhausted

MAX_REPLAY_WINDOW = 65536  # packet_id.h: MAX_SEQ_BACKTRACK
MAX_REPLAY_TIME = 600  # packet_id.h: MAX_TIME_BACKTRACK
_MARK_INTERVAL = 1.0  # seconds per time mark; openvpn itself only reaps every 5 s


class PacketIdSender:
    """Outgoing packet-ids: 1, 2, ... up to PACKET_ID_MAX, never wrapping."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        """The id for the next packet; PacketIdExhausted once the 32-bit space is used up."""
        pid = self.last + 1
        if pid > PACKET_ID_MAX:
            raise PacketIdExhausted("packet-id space exhausted: the key must be renegotiated")
        self.last = pid
        return pid

    def take(self, count: int) -> int:
        """The first of `count` consecutive ids (a batch); PacketIdExhausted if they do not
        all fit."""
        first = self.last + 1
        if first + count - 1 > PACKET_ID_MAX:
            raise PacketIdExhausted("packet-id space exhausted: the key must be renegotiated")
        self.last = first + count - 1
        return first

    @property
    def needs_renegotiation(self) -> bool:
        """True once the ids are close to running out (packet_id_close_to_wrapping)."""
        return self.last >= PACKET_ID_RENEG_THRESHOLD

    @property
    def exhausted(self) -> bool:
        return self.last >= PACKET_ID_MAX


class ReplayWindow:
    """Sliding replay window over packet-ids with a time limit on reordering."""

    __slots__ = (
        "_bits",
        "_cur_high",
        "_cur_start",
        "_cur_time",
        "_marks",
        "_mask",
        "expired",
        "highest",
        "invalid",
        "replayed",
        "size",
        "time_window",
        "too_old",
    )

    def __init__(self, size: int = DEFAULT_REPLAY_WINDOW, time_window: float = DEFAULT_REPLAY_TIME):
        if not 0 < size <= MAX_REPLAY_WINDOW:
            raise ValueError(f"replay window size must be 1..{MAX_REPLAY_WINDOW}")
        if not 0 <= time_window <= MAX_REPLAY_TIME:
            raise ValueError(f"replay time window must be 0..{MAX_REPLAY_TIME} s")
        self.size = size
        self.time_window = time_window
        self.highest = 0
        self._bits = 0  # bit i set: id (highest - i) was seen
        self._mask = (1 << size) - 1
        # Time marks: (last arrival time, highest id by then), one per _MARK_INTERVAL.
        self._marks: deque[tuple[float, int]] = deque()
        self._cur_start = self._cur_time = float("-inf")
        self._cur_high = 0
        # Reject counters by reason.
        self.invalid = 0  # packet-id 0
        self.replayed = 0  # seen before
        self.too_old = 0  # below the window
        self.expired = 0  # newer ids arrived more than time_window ago

    def check(self, packet_id: int, now: float) -> bool:
        """Would this id be accepted? Counts the reason when it would not."""
        if packet_id > self.highest:
            return True
        if packet_id == 0:
            self.invalid += 1
            return False
        diff = self.highest - packet_id
        if diff >= self.size:
            self.too_old += 1
            return False
        if self._bits >> diff & 1:
            self.replayed += 1
            return False
        if self.time_window and packet_id <= self._expired_below(now):
            self.expired += 1
            return False
        return True

    def update(self, packet_id: int, now: float) -> None:
        """Record an authenticated id (which check() accepted)."""
        shift = packet_id - self.highest
        if shift > 0:
            self._bits = ((self._bits << shift) | 1) & self._mask
            self.highest = packet_id
            if now - self._cur_start >= _MARK_INTERVAL:
                self._roll_mark(now)
            self._cur_time = now
            self._cur_high = packet_id
        elif -shift < self.size:
            self._bits |= 1 << -shift

    def _roll_mark(self, now: float) -> None:
        if self._cur_high:
            self._marks.append((self._cur_time, self._cur_high))
        self._cur_start = now
        cutoff = now - self.time_window
        # Only the newest mark older than the cutoff matters; drop the ones before it.
        while len(self._marks) > 1 and self._marks[1][0] < cutoff:
            self._marks.popleft()

    def _expired_below(self, now: float) -> int:
        """Highest id that arrived before now - time_window: it and all below are stale."""
        cutoff = now - self.time_window
        if self._cur_high and self._cur_time < cutoff:
            return self._cur_high
        stale = 0
        for t, high in self._marks:
            if t >= cutoff:
                break
            stale = high
        return stale

    @property
    def rejected(self) -> int:
        return self.invalid + self.replayed + self.too_old + self.expired
