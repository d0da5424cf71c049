"""tls-crypt: encrypt-and-authenticate every control packet (tls_crypt.c).

Wire layout:  op|kid, session-id, packet-id (8), tag (32), AES-256-CTR(rest)
tag = HMAC-SHA256(Ka, op|kid ‖ session-id ‖ packet-id ‖ rest) and the CTR IV is
tag[:16] (SIV-like). Key direction is fixed by role: the server uses keys[0]
outgoing, the client keys[1].
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .constants import DEFAULT_REPLAY_TIME, DEFAULT_REPLAY_WINDOW, KEY2_LEN, Opcode
from .errors import AuthError, ParseError
from .packet import peek_op
from .statickey import StaticKey
from .wrapping import HEADER_LEN, LONG_PACKET_ID, LongPacketIdReplay, LongPacketIdSender

TAG_LEN = 32
IV_LEN = 16
CIPHER_KEY_LEN = 32  # AES-256-CTR
HMAC_KEY_LEN = 32  # HMAC-SHA256
OVERHEAD = LONG_PACKET_ID.size + TAG_LEN
DYNAMIC_TLS_CRYPT_LABEL = b"EXPORTER-OpenVPN-dynamic-tls-crypt"
WKC_OPCODES = frozenset({Opcode.HARD_RESET_CLIENT_V3, Opcode.CONTROL_WKC_V1})


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    ctx = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return ctx.update(data) + ctx.finalize()


def seal(cipher_key: bytes, hmac_key: bytes, ad: bytes, plaintext: bytes) -> bytes:
    """tag ‖ ciphertext for the header `ad` and the plaintext after it."""
    tag = hmac.digest(hmac_key, ad + plaintext, hashlib.sha256)
    return tag + _ctr(cipher_key, tag[:IV_LEN], plaintext)


def open_sealed(cipher_key: bytes, hmac_key: bytes, ad: bytes, sealed: bytes) -> bytes:
    """Inverse of seal(); AuthError if the tag does not verify."""
    if len(sealed) < TAG_LEN:
        raise ParseError("tls-crypt tag truncated")
    tag = sealed[:TAG_LEN]
    plaintext = _ctr(cipher_key, tag[:IV_LEN], sealed[TAG_LEN:])
    if not hmac.compare_digest(tag, hmac.digest(hmac_key, ad + plaintext, hashlib.sha256)):
        raise AuthError("tls-crypt tag mismatch")
    return plaintext


def strip_wkc(wire: bytes) -> tuple[bytes, bytes]:
    """Split a HARD_RESET_CLIENT_V3 / CONTROL_WKC_V1 packet into (packet, WKc).

    WKc ends in its own 16-bit length, which is how openvpn finds it (tls_crypt.c).
    """
    if len(wire) < HEADER_LEN + OVERHEAD + 2:
        raise ParseError("packet too short to carry a wrapped client key")
    wkc_len = int.from_bytes(wire[-2:], "big")
    if not 2 < wkc_len <= len(wire) - HEADER_LEN - OVERHEAD:
        raise ParseError("wrapped client key length out of range")
    return wire[:-wkc_len], wire[-wkc_len:]


class TLSCrypt:
    """tls-crypt wrapper. A server-side instance made from a tls-crypt-v2 client key sets
    `carries_wkc` so that resent packets with a WKc appended are unwrapped too."""

    def __init__(
        self,
        key: StaticKey,
        is_server: bool,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
        *,
        packet_id_start: int = 0,
        carries_wkc: bool = False,
    ) -> None:
        self.key = key
        self.is_server = is_server
        out_slot, in_slot = (0, 1) if is_server else (1, 0)
        self.send_keys = key.cipher(out_slot)[:CIPHER_KEY_LEN], key.hmac(out_slot)[:HMAC_KEY_LEN]
        self.recv_keys = key.cipher(in_slot)[:CIPHER_KEY_LEN], key.hmac(in_slot)[:HMAC_KEY_LEN]
        self.overhead = OVERHEAD
        self.sender = LongPacketIdSender(packet_id_start)
        self.replay = LongPacketIdReplay(replay_window, replay_time)
        self.carries_wkc = carries_wkc

    @classmethod
    def dynamic(
        cls,
        ekm: bytes,
        is_server: bool,
        original: StaticKey | None = None,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
    ) -> TLSCrypt:
        """Renegotiation key of IV_PROTO_DYN_TLS_CRYPT peers: 256 bytes exported with
        DYNAMIC_TLS_CRYPT_LABEL, XORed with the tls-auth/tls-crypt(-v2) key if any."""
        if len(ekm) != KEY2_LEN:
            raise ValueError("dynamic tls-crypt needs 256 exported bytes")
        key = StaticKey(ekm) if original is None else original.xor(ekm)
        return cls(key, is_server, replay_window, replay_time)

    def wrap(self, plain: bytes, now: float) -> bytes:
        if len(plain) < HEADER_LEN:
            raise ValueError("not a control packet")
        ad = plain[:HEADER_LEN] + self.sender.next(now)
        return ad + seal(*self.send_keys, ad, plain[HEADER_LEN:])

    def unwrap(self, wire: bytes, now: float) -> bytes:
        wire = bytes(wire)
        if self.carries_wkc and peek_op(wire)[0] in WKC_OPCODES:
            wire = strip_wkc(wire)[0]  # the session already holds this client's key
        return self.unwrap_packet(wire, now)

    def unwrap_packet(self, wire: bytes, now: float) -> bytes:
        """Unwrap a packet with no WKc attached."""
        ad_len = HEADER_LEN + LONG_PACKET_ID.size
        if len(wire) < ad_len + TAG_LEN:
            raise ParseError("packet too short for tls-crypt")
        plaintext = open_sealed(*self.recv_keys, wire[:ad_len], wire[ad_len:])
        self.replay.accept(wire[HEADER_LEN:ad_len], now)
        return wire[:HEADER_LEN] + plaintext
