"""tls-auth: an HMAC over every control packet (ssl_pkt.c swap_hmac, crypto.c openvpn_encrypt).

Wire layout:  op|kid, session-id, HMAC, packet-id (counter 4, time 4), rest
The HMAC covers packet-id ‖ op|kid ‖ session-id ‖ rest, i.e. the packet as
openvpn builds it before moving the HMAC record behind the session-id.
"""

from __future__ import annotations

import hashlib
import hmac

from .constants import DEFAULT_REPLAY_TIME, DEFAULT_REPLAY_WINDOW
from .errors import AuthError, ParseError
from .statickey import StaticKey
from .wrapping import HEADER_LEN, LONG_PACKET_ID, LongPacketIdReplay, LongPacketIdSender

# --auth digests openvpn accepts for tls-auth, by the names its config uses.
DIGESTS = {
    "SHA1": "sha1",
    "SHA224": "sha224",
    "SHA256": "sha256",
    "SHA384": "sha384",
    "SHA512": "sha512",
}
DEFAULT_DIGEST = "SHA1"  # openvpn's --auth default


def key_slots(direction: int | None) -> tuple[int, int]:
    """(outgoing, incoming) index into the static key for a key-direction (crypto.c)."""
    if direction is None:
        return 0, 0  # bidirectional: both ways use keys[0]
    if direction == 0:
        return 0, 1
    if direction == 1:
        return 1, 0
    raise ValueError(f"key-direction must be 0, 1 or None, not {direction}")


class TLSAuth:
    """tls-auth wrapper; `direction` is key-direction (0, 1, or None for bidirectional)."""

    def __init__(
        self,
        key: StaticKey,
        direction: int | None,
        digest: str = DEFAULT_DIGEST,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
    ) -> None:
        try:
            self._hash = DIGESTS[digest.upper()]
        except KeyError:
            raise ValueError(f"unsupported tls-auth digest {digest!r}") from None
        self.mac_len = hashlib.new(self._hash).digest_size
        out_slot, in_slot = key_slots(direction)
        self._out_key = key.hmac(out_slot)[: self.mac_len]
        self._in_key = key.hmac(in_slot)[: self.mac_len]
        self.overhead = self.mac_len + LONG_PACKET_ID.size
        self.sender = LongPacketIdSender()
        self.replay = LongPacketIdReplay(replay_window, replay_time)

    def wrap(self, plain: bytes, now: float) -> bytes:
        if len(plain) < HEADER_LEN:
            raise ValueError("not a control packet")
        pid = self.sender.next(now)
        mac = hmac.digest(self._out_key, pid + plain, self._hash)
        return b"".join((plain[:HEADER_LEN], mac, pid, plain[HEADER_LEN:]))

    def unwrap(self, wire: bytes, now: float) -> bytes:
        wire = bytes(wire)
        if len(wire) < HEADER_LEN + self.overhead:
            raise ParseError("packet too short for tls-auth")
        mac = wire[HEADER_LEN : HEADER_LEN + self.mac_len]
        pid_at = HEADER_LEN + self.mac_len
        pid = wire[pid_at : pid_at + LONG_PACKET_ID.size]
        rest = wire[pid_at + LONG_PACKET_ID.size :]
        expected = hmac.digest(self._in_key, pid + wire[:HEADER_LEN] + rest, self._hash)
        if not hmac.compare_digest(mac, expected):
            raise AuthError("tls-auth HMAC mismatch")
        self.replay.accept(pid, now)
        return wire[:HEADER_LEN] + rest
