"""tls-crypt-v2: per-client tls-crypt keys, carried to the server wrapped (tls_crypt.c).

The client holds Kc (a 2048-bit tls-crypt key) and WKc, Kc wrapped by the
server key:  WKc = T ‖ AES-256-CTR(Ke, IV=T[:16], Kc ‖ metadata) ‖ len,
T = HMAC-SHA256(Ka, len ‖ Kc ‖ metadata), len = 16-bit length of all of WKc.
The client appends WKc to its tls-crypt-wrapped HARD_RESET_CLIENT_V3 (and to
CONTROL_WKC_V1); the server unwraps WKc, then the packet with Kc.

Early negotiation (ssl_pkt.h, mudp.c): a client that supports it starts its
tls-crypt packet-id counter at 0x0f000000, so the reset's packet-id has 0x0f
in its top byte. The server may then answer statelessly and ask, with a TLV
(type 1 = flags, value bit 0 = resend WKc) in its reset's payload, for the
WKc again on the client's first CONTROL packet, sent as CONTROL_WKC_V1.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .constants import (
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    KEY2_LEN,
    TLS_CRYPT_V2_EARLY_NEG_PACKET_ID,
    Opcode,
)
from .errors import AuthError, ParseError
from .packet import peek_op
from .statickey import (
    TLS_CRYPT_V2_MAX_WKC_LEN,
    WKC_LEN_FIELD,
    StaticKey,
    TLSCryptV2ClientKey,
    TLSCryptV2ServerKey,
)
from .tls_crypt import (
    CIPHER_KEY_LEN,
    HMAC_KEY_LEN,
    IV_LEN,
    TAG_LEN,
    WKC_OPCODES,
    TLSCrypt,
    _ctr,
    strip_wkc,
)
from .wrapping import HEADER_LEN

METADATA_TYPE_USER = 0x00
METADATA_TYPE_TIMESTAMP = 0x01
MAX_METADATA_LEN = TLS_CRYPT_V2_MAX_WKC_LEN - (KEY2_LEN + TAG_LEN + WKC_LEN_FIELD)
EARLY_NEG_MASK = 0xFF000000
TLV_TYPE_EARLY_NEG_FLAGS = 0x0001
EARLY_NEG_FLAG_RESEND_WKC = 0x0001
_TLV = struct.Struct("!HH")


def _server_keys(server_key: TLSCryptV2ServerKey) -> tuple[bytes, bytes]:
    return server_key.cipher[:CIPHER_KEY_LEN], server_key.hmac[:HMAC_KEY_LEN]


def wrap_client_key(server_key: TLSCryptV2ServerKey, kc: StaticKey, metadata: bytes) -> bytes:
    """WKc for Kc; `metadata` includes its leading type byte."""
    if len(metadata) > MAX_METADATA_LEN:
        raise ValueError(f"metadata longer than {MAX_METADATA_LEN} bytes")
    ke, ka = _server_keys(server_key)
    length = (TAG_LEN + KEY2_LEN + len(metadata) + WKC_LEN_FIELD).to_bytes(2, "big")
    tag = hmac.digest(ka, length + kc.data + metadata, hashlib.sha256)
    return tag + _ctr(ke, tag[:IV_LEN], kc.data + metadata) + length


def unwrap_client_key(server_key: TLSCryptV2ServerKey, wkc: bytes) -> tuple[StaticKey, bytes]:
    """(Kc, metadata with its type byte) from WKc; AuthError if not made with this key."""
    if not TAG_LEN + WKC_LEN_FIELD <= len(wkc) <= TLS_CRYPT_V2_MAX_WKC_LEN:
        raise ParseError("wrapped client key length out of range")
    length = wkc[-WKC_LEN_FIELD:]
    if int.from_bytes(length, "big") != len(wkc):
        raise ParseError("wrapped client key length field does not match")
    ke, ka = _server_keys(server_key)
    tag = wkc[:TAG_LEN]
    plaintext = _ctr(ke, tag[:IV_LEN], wkc[TAG_LEN:-WKC_LEN_FIELD])
    if not hmac.compare_digest(tag, hmac.digest(ka, length + plaintext, hashlib.sha256)):
        raise AuthError("client key not wrapped by this tls-crypt-v2 server key")
    if len(plaintext) < KEY2_LEN:
        raise AuthError("wrapped client key too short")
    return StaticKey(plaintext[:KEY2_LEN]), plaintext[KEY2_LEN:]


def generate_client_key(
    server_key: TLSCryptV2ServerKey,
    metadata: bytes | None = None,
    *,
    timestamp: int | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> TLSCryptV2ClientKey:
    """What `openvpn --genkey tls-crypt-v2-client` makes: user metadata if given, else the
    creation time (unix seconds, passed in since this package reads no clock)."""
    if metadata is not None:
        meta = bytes((METADATA_TYPE_USER,)) + metadata
    elif timestamp is not None:
        meta = bytes((METADATA_TYPE_TIMESTAMP,)) + timestamp.to_bytes(8, "big", signed=True)
    else:
        raise ValueError("give metadata or a timestamp")
    kc = StaticKey.generate(rng)
    return TLSCryptV2ClientKey(kc, wrap_client_key(server_key, kc, meta))


def metadata_timestamp(metadata_type: int, metadata: bytes) -> int | None:
    """The key's creation time for --tls-crypt-v2-max-age, if it carries one."""
    if metadata_type != METADATA_TYPE_TIMESTAMP or len(metadata) < 8:
        return None
    return int.from_bytes(metadata[:8], "big", signed=True)


def has_early_negotiation(wire: bytes) -> bool:
    """Whether a wrapped HARD_RESET_CLIENT_V3 announces early negotiation (mudp.c)."""
    if len(wire) < HEADER_LEN + 4:
        return False
    counter = int.from_bytes(wire[HEADER_LEN : HEADER_LEN + 4], "big")
    return counter & EARLY_NEG_MASK & TLS_CRYPT_V2_EARLY_NEG_PACKET_ID == (
        TLS_CRYPT_V2_EARLY_NEG_PACKET_ID
    )


@dataclass(frozen=True)
class EarlyNegotiation:
    """TLVs in a hard reset's payload; unknown types are skipped."""

    resend_wkc: bool = False


def parse_early_negotiation(payload: bytes) -> EarlyNegotiation:
    resend = False
    pos = 0
    while pos < len(payload):
        if len(payload) - pos < _TLV.size:
            raise ParseError("truncated early-negotiation TLV")
        kind, length = _TLV.unpack_from(payload, pos)
        pos += _TLV.size
        if len(payload) - pos < length:
            raise ParseError("early-negotiation TLV overruns the packet")
        if kind == TLV_TYPE_EARLY_NEG_FLAGS:
            if length != 2:
                raise ParseError("early-negotiation flags TLV must be 2 bytes")
            flags = int.from_bytes(payload[pos : pos + 2], "big")
            resend = resend or bool(flags & EARLY_NEG_FLAG_RESEND_WKC)
        pos += length
    return EarlyNegotiation(resend_wkc=resend)


def build_early_negotiation(neg: EarlyNegotiation) -> bytes:
    """The server reset's payload for a client that announced early negotiation."""
    if not neg.resend_wkc:
        return b""
    return _TLV.pack(TLV_TYPE_EARLY_NEG_FLAGS, 2) + EARLY_NEG_FLAG_RESEND_WKC.to_bytes(2, "big")


class TLSCryptV2Client(TLSCrypt):
    """Client side: tls-crypt with Kc; WKc rides on V3 resets and CONTROL_WKC_V1."""

    def __init__(
        self,
        client_key: TLSCryptV2ClientKey,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
        *,
        early_negotiation: bool = True,
    ) -> None:
        start = TLS_CRYPT_V2_EARLY_NEG_PACKET_ID if early_negotiation else 0
        super().__init__(client_key.key, False, replay_window, replay_time, packet_id_start=start)
        self.wkc = client_key.wkc
        self.early_negotiation = early_negotiation
        self.resend_wkc = False

    def wrap(self, plain: bytes, now: float) -> bytes:
        wire = super().wrap(plain, now)
        if peek_op(plain)[0] in WKC_OPCODES:
            wire += self.wkc
        return wire

    def note_server_reset(self, payload: bytes) -> EarlyNegotiation:
        """Read the TLVs of the server's HARD_RESET_SERVER_V2 payload (reliable id 0)."""
        neg = parse_early_negotiation(payload) if self.early_negotiation else EarlyNegotiation()
        self.resend_wkc = neg.resend_wkc
        return neg

    def control_opcode(self, reliable_packet_id: int) -> Opcode:
        """CONTROL_WKC_V1 for the first CONTROL packet when the server asked, else
        CONTROL_V1 (ssl.c control_packet_needs_wkc)."""
        if self.resend_wkc and reliable_packet_id == 1:
            return Opcode.CONTROL_WKC_V1
        return Opcode.CONTROL_V1


@dataclass(frozen=True)
class ClientKeyInfo:
    """What the server learnt from a client's WKc."""

    key: StaticKey
    metadata_type: int
    metadata: bytes


class TLSCryptV2Server:
    """Server side: unwraps the client's key from its first packet."""

    def __init__(
        self,
        server_key: TLSCryptV2ServerKey,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
    ) -> None:
        self.server_key = server_key
        self.replay_window = replay_window
        self.replay_time = replay_time

    def unwrap_client_key(self, wkc: bytes) -> ClientKeyInfo:
        kc, meta = unwrap_client_key(self.server_key, wkc)
        if not meta:
            raise AuthError("wrapped client key has no metadata type")
        return ClientKeyInfo(kc, meta[0], meta[1:])

    def unwrap_client_reset(self, wire: bytes, now: float) -> tuple[TLSCrypt, bytes, bytes, int]:
        """For a HARD_RESET_CLIENT_V3 or CONTROL_WKC_V1 from an unknown client: the
        session's TLSCrypt, the plain packet, the metadata and its type."""
        wire = bytes(wire)
        if peek_op(wire)[0] not in WKC_OPCODES:
            raise ParseError("not a packet carrying a wrapped client key")
        packet, wkc = strip_wkc(wire)
        info = self.unwrap_client_key(wkc)
        wrapper = TLSCrypt(info.key, True, self.replay_window, self.replay_time, carries_wkc=True)
        plain = wrapper.unwrap_packet(packet, now)
        return wrapper, plain, info.metadata, info.metadata_type
