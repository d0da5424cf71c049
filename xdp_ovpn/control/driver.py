"""The per-peer session driver: moves bytes and time between a proto.Session and the world.

aioquic's asyncio protocol in miniature: datagrams in, `datagrams_to_send` out, one timer
(`get_timer` / `handle_timer`) on the event loop, and events handed to the owner (server,
client or p2p), which turns them into data-plane verbs. No protocol logic lives here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from xdp_ovpn.control.log import get_logger, peer_label
from xdp_ovpn.dataplane.api import Address
from xdp_ovpn.proto.errors import ProtocolError
from xdp_ovpn.proto.events import Event, KeysReady

EventHandler = Callable[["SessionDriver", Event], None]


class SessionDriver:
    """Drives one Session for one remote address."""

    def __init__(self, session: Any, remote: Address, send: Callable[[bytes, Address], None],
                 on_event: EventHandler, loop: asyncio.AbstractEventLoop) -> None:
        self.session = session
        self.remote = remote
        self._send = send
        self._on_event = on_event
        self._loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.closed = False
        self.common_name: str | None = None
        self.bad_packets = 0
        # Control-channel link bytes: status reports count them with the data bytes.
        self.rx_bytes = 0
        self.tx_bytes = 0

    @property
    def label(self) -> str:
        return peer_label(self.common_name, self.remote)

    def datagram_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.rx_bytes += len(data)
        try:
            self.session.receive_datagram(data, time.monotonic())
        except ProtocolError as exc:
            self.bad_packets += 1
            get_logger().debug("%s dropped control packet: %s", self.label, exc)
        self.pump()

    def add_data_traffic(self, n_bytes: int, n_packets: int) -> None:
        """Data-channel traffic the data plane carried: may start a renegotiation."""
        if self.closed or not (n_bytes or n_packets):
            return
        self.session.add_data_traffic(n_bytes, n_packets, time.monotonic())
        self.pump()

    def pump(self) -> None:
        """Flush datagrams and events until the session is quiet, then re-arm the timer.

        New keys are installed before the datagrams that go with them: the key-method-2
        message (or its ACK) lets the peer send with the new key at once, and a data plane
        still without it would drop what comes (openvpn installs its DCO key first too)."""
        for _ in range(100):  # events may queue datagrams and the other way round
            datagrams = self.session.datagrams_to_send(time.monotonic())
            events = []
            while (event := self.session.next_event()) is not None:
                events.append(event)
            keys = max((i + 1 for i, e in enumerate(events) if isinstance(e, KeysReady)),
                       default=0)
            self._handle(events[:keys])
            for datagram in datagrams if not self.closed else ():
                self.tx_bytes += len(datagram)
                self._send(datagram, self.remote)
            self._handle(events[keys:])
            if not (datagrams or events) or self.closed:
                break
        self._arm_timer()

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if self.closed:
                return
            self._on_event(self, event)

    def _arm_timer(self) -> None:
        at = None if self.closed else self.session.get_timer()
        if at == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            # loop.time() is time.monotonic(), the session's clock.
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.closed:
            return
        self.session.handle_timer(time.monotonic())
        self.pump()

    def close(self) -> None:
        """Stop driving (the session's last datagrams should have been pumped already)."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
