"""OpenVPN key files: the 2048-bit static key (tls-auth, tls-crypt) and tls-crypt-v2 PEM keys.

A static key is `struct key2`: two `struct key` of {cipher[64], hmac[64]}
(crypto.h), written as hex between `-----BEGIN/END OpenVPN Static key V1-----`
(crypto.c write_key_file / read_key_file). tls-crypt-v2 keys are PEM blocks
named `OpenVPN tls-crypt-v2 server key` (one `struct key`, 128 bytes) and
`OpenVPN tls-crypt-v2 client key` (Kc, 256 bytes, followed by WKc)
(tls_crypt.c).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from .constants import KEY2_LEN, KEY_HALF_LEN
from .errors import ParseError

STATIC_KEY_HEAD = "-----BEGIN OpenVPN Static key V1-----"
STATIC_KEY_FOOT = "-----END OpenVPN Static key V1-----"
TLS_CRYPT_V2_SERVER_PEM = "OpenVPN tls-crypt-v2 server key"
TLS_CRYPT_V2_CLIENT_PEM = "OpenVPN tls-crypt-v2 client key"
CIPHER_KEY_MAX = 64  # MAX_CIPHER_KEY_LENGTH: each slot is padded to this size
HMAC_KEY_MAX = 64  # MAX_HMAC_KEY_LENGTH
SERVER_KEY_LEN = CIPHER_KEY_MAX + HMAC_KEY_MAX
TLS_CRYPT_V2_MAX_WKC_LEN = 1024
WKC_LEN_FIELD = 2
_HEX_PER_LINE = 32
_PEM_PER_LINE = 64


@dataclass(frozen=True, repr=False)
class StaticKey:
    """256 bytes of key material: keys[0] = cipher‖hmac, keys[1] = cipher‖hmac."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != KEY2_LEN:
            raise ValueError(f"a static key has {KEY2_LEN} bytes, not {len(self.data)}")

    def __repr__(self) -> str:  # keep key bytes out of logs and tracebacks
        return "StaticKey(<256 bytes>)"

    def cipher(self, index: int) -> bytes:
        """The 64-byte cipher slot of keys[index]; users take the prefix they need."""
        base = index * KEY_HALF_LEN * 2
        return self.data[base : base + CIPHER_KEY_MAX]

    def hmac(self, index: int) -> bytes:
        """The 64-byte HMAC slot of keys[index]."""
        base = index * KEY_HALF_LEN * 2 + CIPHER_KEY_MAX
        return self.data[base : base + HMAC_KEY_MAX]

    @classmethod
    def generate(cls, rng: Callable[[int], bytes] = os.urandom) -> StaticKey:
        return cls(rng(KEY2_LEN))

    def xor(self, other: bytes) -> StaticKey:
        """This key XOR 256 other bytes (dynamic tls-crypt mixes EKM output in this way)."""
        if len(other) != KEY2_LEN:
            raise ValueError("xor needs 256 bytes")
        return StaticKey(bytes(a ^ b for a, b in zip(self.data, other, strict=True)))


def parse_static_key(text: str) -> StaticKey:
    """Parse an `OpenVPN Static key V1` file (comments before the header are ignored)."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = lines.index(STATIC_KEY_HEAD)
    except ValueError:
        raise ParseError("static key header not found") from None
    try:
        end = lines.index(STATIC_KEY_FOOT, start + 1)
    except ValueError:
        raise ParseError("static key footer not found") from None
    body = "".join("".join(line.split()) for line in lines[start + 1 : end])
    bad = next((c for c in body if c not in string.hexdigits), None)
    if bad is not None:
        raise ParseError(f"non-hex character {bad!r} in static key")
    if len(body) != KEY2_LEN * 2:
        raise ParseError(f"static key has {len(body) // 2} bytes, need {KEY2_LEN}")
    return StaticKey(bytes.fromhex(body))


def format_static_key(key: StaticKey) -> str:
    """The file text `openvpn --genkey secret` writes."""
    hexed = key.data.hex()
    rows = [hexed[i : i + _HEX_PER_LINE] for i in range(0, len(hexed), _HEX_PER_LINE)]
    head = f"#\n# {KEY2_LEN * 8} bit OpenVPN static key\n#\n"
    return head + "\n".join([STATIC_KEY_HEAD, *rows, STATIC_KEY_FOOT]) + "\n"


def pem_decode(text: str, name: str) -> bytes:
    """The bytes of the first `-----BEGIN name-----` block in text."""
    m = re.search(
        rf"-----BEGIN {re.escape(name)}-----(.*?)-----END {re.escape(name)}-----", text, re.S
    )
    if m is None:
        raise ParseError(f"no '{name}' PEM block")
    body = "".join(m.group(1).split())
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise ParseError(f"bad base64 in '{name}'") from None


def pem_encode(data: bytes, name: str) -> str:
    """PEM with 64-character lines, as OpenSSL (and so openvpn) writes it."""
    b64 = base64.b64encode(data).decode()
    rows = [b64[i : i + _PEM_PER_LINE] for i in range(0, len(b64), _PEM_PER_LINE)]
    return "\n".join([f"-----BEGIN {name}-----", *rows, f"-----END {name}-----"]) + "\n"


@dataclass(frozen=True, repr=False)
class TLSCryptV2ServerKey:
    """One `struct key`: AES-256-CTR key = cipher[:32], HMAC-SHA256 key = hmac[:32]."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != SERVER_KEY_LEN:
            raise ValueError(f"a tls-crypt-v2 server key has {SERVER_KEY_LEN} bytes")

    def __repr__(self) -> str:
        return "TLSCryptV2ServerKey(<128 bytes>)"

    @property
    def cipher(self) -> bytes:
        return self.data[:CIPHER_KEY_MAX]

    @property
    def hmac(self) -> bytes:
        return self.data[CIPHER_KEY_MAX:]

    @classmethod
    def generate(cls, rng: Callable[[int], bytes] = os.urandom) -> TLSCryptV2ServerKey:
        return cls(rng(SERVER_KEY_LEN))


@dataclass(frozen=True, repr=False)
class TLSCryptV2ClientKey:
    """The client's tls-crypt key Kc and WKc, Kc wrapped for the server (opaque here)."""

    key: StaticKey
    wkc: bytes

    def __post_init__(self) -> None:
        if not WKC_LEN_FIELD < len(self.wkc) <= TLS_CRYPT_V2_MAX_WKC_LEN:
            raise ValueError("WKc length out of range")

    def __repr__(self) -> str:
        return f"TLSCryptV2ClientKey(<Kc>, wkc=<{len(self.wkc)} bytes>)"


def parse_tls_crypt_v2_server_key(text: str) -> TLSCryptV2ServerKey:
    data = pem_decode(text, TLS_CRYPT_V2_SERVER_PEM)
    if len(data) != SERVER_KEY_LEN:
        raise ParseError(f"tls-crypt-v2 server key has {len(data)} bytes, need {SERVER_KEY_LEN}")
    return TLSCryptV2ServerKey(data)


def format_tls_crypt_v2_server_key(key: TLSCryptV2ServerKey) -> str:
    return pem_encode(key.data, TLS_CRYPT_V2_SERVER_PEM)


def parse_tls_crypt_v2_client_key(text: str) -> TLSCryptV2ClientKey:
    """Split a client key file into Kc and WKc; WKc's trailing length must match."""
    data = pem_decode(text, TLS_CRYPT_V2_CLIENT_PEM)
    wkc = data[KEY2_LEN:]
    if len(wkc) <= WKC_LEN_FIELD or len(wkc) > TLS_CRYPT_V2_MAX_WKC_LEN:
        raise ParseError("tls-crypt-v2 client key has no valid WKc")
    if int.from_bytes(wkc[-WKC_LEN_FIELD:], "big") != len(wkc):
        raise ParseError("tls-crypt-v2 WKc length field does not match")
    return TLSCryptV2ClientKey(StaticKey(data[:KEY2_LEN]), wkc)


def format_tls_crypt_v2_client_key(key: TLSCryptV2ClientKey) -> str:
    return pem_encode(key.key.data + key.wkc, TLS_CRYPT_V2_CLIENT_PEM)
