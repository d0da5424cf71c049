"""Epoch data keys of OpenVPN 2.7 (crypto_epoch.c, ssl.c: init_epoch_keys) and when to use them.

Each direction has a chain of 32-byte epoch secrets E_1, E_2, ...; E_1 is the first 32
bytes of that direction's cipher half of key2 (from TLS-EKM or the PRF, as before). With
OVPN-Expand-Label, TLS 1.3's HKDF-Expand-Label over SHA-256 with the prefix "ovpn "
instead of "tls13 ":

    E_n+1 = Expand-Label(E_n, "datakey upd", 32)
    K_n   = Expand-Label(E_n, "data_key", key length)
    IV_n  = Expand-Label(E_n, "data_iv", 12)

Both peers can walk a chain forward but never back, so an old key is gone once replaced.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .constants import (
    AEAD_CIPHERS,
    EPOCH_IMPLICIT_IV_LEN,
    EPOCH_KEY_LEN,
    EPOCH_LABEL_DATA_IV,
    EPOCH_LABEL_DATA_KEY,
    EPOCH_LABEL_PREFIX,
    EPOCH_LABEL_UPDATE,
    EPOCH_MAX,
    EPOCH_PROTOCOL_FLAG,
    KEY2_LEN,
    IVProto,
)
from .keys import KEY_LEN, cipher_key_len
from .peerinfo import iv_proto

_SHA256_LEN = 32
_U16 = struct.Struct("!H")


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand with HMAC-SHA256: T(i) = HMAC(prk, T(i-1) | info | i)."""
    if not 0 < length <= 255 * _SHA256_LEN:
        raise ValueError(f"HKDF-Expand length must be 1..{255 * _SHA256_LEN}")
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return bytes(out[:length])


def expand_label(secret: bytes, label: bytes, length: int, context: bytes = b"") -> bytes:
    """OVPN-Expand-Label: HKDF-Expand over the TLS 1.3 HkdfLabel with the "ovpn " prefix."""
    if len(secret) != EPOCH_KEY_LEN:
        raise ValueError(f"an epoch secret is {EPOCH_KEY_LEN} bytes, not {len(secret)}")
    if not 1 <= len(label) <= 250 or len(context) > 255 or not 0 < length <= 0xFFFF:
        raise ValueError("label must be 1..250 bytes, context up to 255, length 1..65535")
    full = EPOCH_LABEL_PREFIX + label
    info = _U16.pack(length) + bytes([len(full)]) + full + bytes([len(context)]) + context
    return hkdf_expand(secret, info, length)


@dataclass(frozen=True)
class EpochDataKey:
    """The AEAD key and 12-byte implicit IV of one epoch in one direction."""

    epoch: int
    cipher: str
    key: bytes
    implicit_iv: bytes


@dataclass(frozen=True)
class EpochKey:
    """One link E_n of a direction's epoch chain."""

    epoch: int
    secret: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.epoch <= EPOCH_MAX:
            raise ValueError(f"epoch {self.epoch} outside 1..{EPOCH_MAX}")
        if len(self.secret) != EPOCH_KEY_LEN:
            raise ValueError(f"an epoch secret is {EPOCH_KEY_LEN} bytes")

    def next(self) -> EpochKey:
        """E_n+1; there is none after EPOCH_MAX."""
        if self.epoch >= EPOCH_MAX:
            raise ValueError("the epoch chain ends at 65535")
        secret = expand_label(self.secret, EPOCH_LABEL_UPDATE, EPOCH_KEY_LEN)
        return EpochKey(self.epoch + 1, secret)

    def data_key(self, cipher: str) -> EpochDataKey:
        """K_n and IV_n for `cipher` (crypto_epoch.c: epoch_data_key_derive)."""
        key = expand_label(self.secret, EPOCH_LABEL_DATA_KEY, cipher_key_len(cipher))
        iv = expand_label(self.secret, EPOCH_LABEL_DATA_IV, EPOCH_IMPLICIT_IV_LEN)
        return EpochDataKey(self.epoch, cipher, key, iv)

    def __repr__(self) -> str:  # never print key material
        return f"EpochKey(epoch={self.epoch})"


def initial_epoch_keys(key2: bytes, is_server: bool) -> tuple[EpochKey, EpochKey]:
    """(E_1 send, E_1 receive) from key2: the client sends with keys[0], the server keys[1]."""
    if len(key2) != KEY2_LEN:
        raise ValueError(f"key2 must be {KEY2_LEN} bytes")
    c2s = EpochKey(1, key2[:EPOCH_KEY_LEN])
    s2c = EpochKey(1, key2[KEY_LEN : KEY_LEN + EPOCH_KEY_LEN])
    return (s2c, c2s) if is_server else (c2s, s2c)


def epoch_format_agreed(peer_info: Mapping[str, str], cipher: str, supported: bool) -> bool:
    """Server or p2p side: use the epoch format with this peer (ssl_ncp.c: p2p_mode_ncp,
    multi.c: multi_client_set_protocol_options)?

    Only when we support it, the peer announced IV_PROTO_DATA_EPOCH and the cipher is AEAD.
    A server then pushes EPOCH_PROTOCOL_FLAG in `protocol-flags`.
    """
    return supported and cipher in AEAD_CIPHERS and IVProto.DATA_EPOCH in iv_proto(peer_info)


def epoch_format_pushed(protocol_flags: Sequence[str]) -> bool:
    """Client side: did the server's `protocol-flags` switch the epoch format on?"""
    return EPOCH_PROTOCOL_FLAG in protocol_flags
