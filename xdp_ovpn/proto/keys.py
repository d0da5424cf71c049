"""Data-channel key material: OpenVPN's TLS 1.0 PRF expansion, the key2 split, TLS-EKM parameters.

The 256-byte key block ("key2") is two `struct key` of {cipher[64], hmac[64]}:
keys[0] is client-to-server, keys[1] server-to-client (crypto.c:
key_direction_state_init; ssl.c: init_key_contexts passes KEY_DIRECTION_INVERSE
on the server). For AEAD ciphers the cipher key is a prefix of the cipher half
and the 8-byte implicit IV ("nonce tail") a prefix of the hmac half.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from .constants import (
    AEAD_CIPHERS,
    AEAD_NONCE_TAIL_LEN,
    KEY2_LEN,
    KEY_HALF_LEN,
    PRF_EXPANSION_LABEL,
    PRF_MASTER_LABEL,
    SESSION_ID_LEN,
    TLS_EKM_LABEL,
)
from .errors import NegotiationError

PRE_MASTER_LEN = 48
RANDOM_LEN = 32
MASTER_SECRET_LEN = 48
KEY_LEN = 2 * KEY_HALF_LEN  # one direction: cipher half + hmac half

# RFC 5705 exporter parameters: the data keys (ssl.c: generate_key_expansion_tls_export) and
# the 3-byte p2p peer-id (ssl_ncp.c: p2p_ncp_set_options); labels from ssl_backend.h.
EKM_DATA_KEYS_LABEL = TLS_EKM_LABEL
EKM_DATA_KEYS_LEN = KEY2_LEN
EKM_P2P_PEER_ID_LABEL = b"EXPORTER-OpenVPN-p2p-peerid"
EKM_P2P_PEER_ID_LEN = 3


def _p_hash(digest: str, secret: bytes, seed: bytes, length: int) -> bytes:
    """RFC 2246 P_hash: HMAC chain A(i) = HMAC(secret, A(i-1)), output HMAC(secret, A(i) + seed)."""
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, digest)
        out += hmac.digest(secret, a + seed, digest)
    return bytes(out[:length])


def tls1_prf(secret: bytes, seed: bytes, length: int) -> bytes:
    """The TLS 1.0 PRF: P_MD5 over the first half of the secret XOR P_SHA1 over the second.

    The halves overlap by one byte when the secret length is odd (RFC 2246 5).
    OpenVPN folds its label into the seed, so there is no separate label argument.
    """
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], seed, length)
    sha1 = _p_hash("sha1", secret[len(secret) - half :], seed, length)
    return bytes(x ^ y for x, y in zip(md5, sha1, strict=True))


def prf_key_expansion(
    pre_master: bytes,
    client_random1: bytes,
    server_random1: bytes,
    client_random2: bytes,
    server_random2: bytes,
    client_sid: bytes,
    server_sid: bytes,
) -> bytes:
    """Key2 (256 bytes) from key method 2 material the legacy way (ssl.c: openvpn_PRF).

    master = PRF(pre_master, "OpenVPN master secret" + c.random1 + s.random1, 48);
    key2 = PRF(master, "OpenVPN key expansion" + c.random2 + s.random2 + c.sid + s.sid, 256).
    """
    _need(pre_master, PRE_MASTER_LEN, "pre_master")
    for name, value in (
        ("client_random1", client_random1),
        ("server_random1", server_random1),
        ("client_random2", client_random2),
        ("server_random2", server_random2),
    ):
        _need(value, RANDOM_LEN, name)
    _need(client_sid, SESSION_ID_LEN, "client_sid")
    _need(server_sid, SESSION_ID_LEN, "server_sid")
    master = tls1_prf(
        pre_master, PRF_MASTER_LABEL + client_random1 + server_random1, MASTER_SECRET_LEN
    )
    seed = PRF_EXPANSION_LABEL + client_random2 + server_random2 + client_sid + server_sid
    return tls1_prf(master, seed, KEY2_LEN)


def _need(value: bytes, length: int, name: str) -> None:
    if len(value) != length:
        raise ValueError(f"{name} must be {length} bytes, got {len(value)}")


@dataclass(frozen=True)
class DirectionalKeys:
    """One side's view of key2: what it encrypts with and what it decrypts with."""

    encrypt_key: bytes
    encrypt_nonce_tail: bytes
    decrypt_key: bytes
    decrypt_nonce_tail: bytes


def cipher_key_len(cipher: str) -> int:
    """Key length of a supported AEAD data cipher; NegotiationError for anything else."""
    try:
        return AEAD_CIPHERS[cipher]
    except KeyError:
        raise NegotiationError(f"unsupported data cipher {cipher!r}") from None


def split_key2(key2: bytes, cipher: str, is_server: bool) -> DirectionalKeys:
    """This side's AEAD keys from key2: the client sends with keys[0], the server keys[1]."""
    _need(key2, KEY2_LEN, "key2")
    key_len = cipher_key_len(cipher)
    c2s, s2c = key2[:KEY_LEN], key2[KEY_LEN:]
    out, inp = (s2c, c2s) if is_server else (c2s, s2c)
    tail = slice(KEY_HALF_LEN, KEY_HALF_LEN + AEAD_NONCE_TAIL_LEN)
    return DirectionalKeys(out[:key_len], out[tail], inp[:key_len], inp[tail])


def p2p_peer_id_from_ekm(exported: bytes) -> int:
    """The 24-bit p2p peer-id from the EKM_P2P_PEER_ID_LABEL export (big-endian)."""
    _need(exported, EKM_P2P_PEER_ID_LEN, "exported peer-id")
    return int.from_bytes(exported, "big")
