"""The session driver's order: new keys go into the data plane before the datagrams that let
the peer use them; other events keep coming after the datagrams."""

from __future__ import annotations

import asyncio

from xdp_ovpn.control.driver import SessionDriver
from xdp_ovpn.proto.events import Event, KeysReady, PushRequestReceived, SessionEstablished

REMOTE = ("192.0.2.1", 1194)


class ScriptedSession:
    """A session that has, once, a key-method-2 datagram and these events to give."""

    def __init__(self, events: list[Event]) -> None:
        self.datagrams = [b"key-method-2"]
        self.events = list(events)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out, self.datagrams = self.datagrams, []
        return out

    def next_event(self) -> Event | None:
        return self.events.pop(0) if self.events else None

    def get_timer(self) -> float | None:
        return None


def _keys(key_id: int) -> KeysReady:
    return KeysReady(key_id, "AES-256-GCM", 0, bytes(32), bytes(8), bytes(32), bytes(8))


def test_keys_are_installed_before_the_datagram_that_lets_the_peer_use_them() -> None:
    sent: list[bytes] = []
    seen: list[tuple[str, int]] = []  # (event, datagrams sent when it was handled)
    events = [SessionEstablished("alice", {}), _keys(1), PushRequestReceived()]

    def on_event(driver: SessionDriver, event: Event) -> None:
        seen.append((type(event).__name__, len(sent)))

    loop = asyncio.new_event_loop()
    try:
        driver = SessionDriver(ScriptedSession(events), REMOTE,
                               lambda data, to: sent.append(data), on_event, loop)
        driver.pump()
    finally:
        loop.close()
    assert sent == [b"key-method-2"]
    # Everything up to the keys before the datagram (in order); the rest after it.
    assert seen == [("SessionEstablished", 0), ("KeysReady", 0), ("PushRequestReceived", 1)]
