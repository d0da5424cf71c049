"""PRF key expansion and the key2 split, against known answers."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from xdp_ovpn.proto.constants import AEAD_CIPHERS, KEY2_LEN
from xdp_ovpn.proto.errors import NegotiationError
from xdp_ovpn.proto.keys import (
    EKM_DATA_KEYS_LABEL,
    EKM_DATA_KEYS_LEN,
    p2p_peer_id_from_ekm,
    prf_key_expansion,
    split_key2,
    tls1_prf,
)

# Vector from OpenVPN/openvpn tests/unit_tests/openvpn/test_crypto.c, crypto_test_tls_prf():
# ssl_tls1_PRF(seed, secret) with the "ipsumlorem" secret and this seed, 32 bytes out.
LOREM = (
    b"Lorem ipsum dolor sit amet, consectetur adipisici elit, sed eiusmod tempor incidunt "
    b"ut labore et dolore magna aliqua."
)
QUIS = b"Quis aute iure reprehenderit in voluptate velit esse cillum dolore"
GOOD_PRF = bytes.fromhex("d98c8518c85e946927916acfc2d592fbb1567e4b4b1459e6a904ac2ddab72d67")

# Our own full-expansion vector: inputs chosen here, master and key2 computed with
# `openssl kdf -kdfopt digest:MD5-SHA1 ... TLS1-PRF` (OpenSSL 3.0) following ssl.c:
# generate_key_expansion_openvpn_prf (labels and seed order from there).
PRE_MASTER = bytes(range(48))
C_R1, S_R1, C_R2, S_R2 = (bytes([b]) * 32 for b in (0xA0, 0xB0, 0xC0, 0xD0))
C_SID, S_SID = bytes.fromhex("0102030405060708"), bytes.fromhex("f1f2f3f4f5f6f7f8")
MASTER = bytes.fromhex(
    "78d57d07383299564e901403bf8f3aee9530cf06590241061ff18340bc035ba4"
    "876618c93ebc23f1598786bf760970f3"
)
KEY2 = bytes.fromhex(
    "eb4f646f7654314cb4fe49840195b3a4c1d54e13d8226b967e3ecfff16521221"
    "9af20d6b9848fa1302fea29a15879ccee49676401b5827c05e27766787a86cec"
    "d7fb0e42e7ab08b3af20237d4debc896a9ef2b9fb4b8d369fbccf2cb9eda82a8"
    "b2c026fce35769761ecd6801856b18af27fde758696c228cd051b0cfeba6bf7d"
    "1204934186729246e5548d26b87fe5371ccca3ab6580aee89dc09394f04277cb"
    "1c3ec1757541eed3988dc20fafe15d541415f5f7ea9f37b3198205f1b06632e7"
    "92c37d2c91c9a294be45752e8077cab8df8ba040f6dead5292f5f28fe72641a7"
    "cf1eee6aac2316bc9491ed01b1604688235bc2842cde346a8a323a3c0d721420"
)


def test_tls1_prf_matches_openvpn_unit_test_vector() -> None:
    assert tls1_prf(LOREM, QUIS, 32) == GOOD_PRF


def test_tls1_prf_prefix_is_stable_across_lengths() -> None:
    assert tls1_prf(LOREM, QUIS, 100)[:32] == GOOD_PRF


def test_master_secret_known_answer() -> None:
    assert tls1_prf(PRE_MASTER, b"OpenVPN master secret" + C_R1 + S_R1, 48) == MASTER


def test_prf_key_expansion_known_answer() -> None:
    key2 = prf_key_expansion(PRE_MASTER, C_R1, S_R1, C_R2, S_R2, C_SID, S_SID)
    assert len(key2) == KEY2_LEN
    assert key2 == KEY2


def test_prf_key_expansion_depends_on_session_id_order() -> None:
    swapped = prf_key_expansion(PRE_MASTER, C_R1, S_R1, C_R2, S_R2, S_SID, C_SID)
    assert swapped != KEY2


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls1_prf_agrees_with_openssl_for_odd_secret_length() -> None:
    secret, seed = bytes(range(1, 60)), b"seed" * 9
    out = subprocess.run(
        [
            "openssl",
            "kdf",
            "-keylen",
            "77",
            "-kdfopt",
            "digest:MD5-SHA1",
            "-kdfopt",
            "hexsecret:" + secret.hex(),
            "-kdfopt",
            "hexseed:" + seed.hex(),
            "TLS1-PRF",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert tls1_prf(secret, seed, 77) == bytes.fromhex(out.strip().replace(":", ""))


def test_prf_key_expansion_rejects_wrong_lengths() -> None:
    with pytest.raises(ValueError, match="pre_master"):
        prf_key_expansion(PRE_MASTER[:47], C_R1, S_R1, C_R2, S_R2, C_SID, S_SID)
    with pytest.raises(ValueError, match="server_sid"):
        prf_key_expansion(PRE_MASTER, C_R1, S_R1, C_R2, S_R2, C_SID, S_SID[:4])


@pytest.mark.parametrize(("cipher", "key_len"), sorted(AEAD_CIPHERS.items()))
def test_split_key2_client_encrypts_with_keys0_server_with_keys1(cipher: str, key_len: int) -> None:
    key2 = bytes(range(256))
    client = split_key2(key2, cipher, is_server=False)
    server = split_key2(key2, cipher, is_server=True)
    # keys[0] = key2[0:128] = cipher[64] | hmac[64]; keys[1] = key2[128:256].
    assert client.encrypt_key == key2[0:key_len]
    assert client.encrypt_nonce_tail == key2[64:72]
    assert client.decrypt_key == key2[128 : 128 + key_len]
    assert client.decrypt_nonce_tail == key2[192:200]
    assert (server.encrypt_key, server.encrypt_nonce_tail) == (
        client.decrypt_key,
        client.decrypt_nonce_tail,
    )
    assert (server.decrypt_key, server.decrypt_nonce_tail) == (
        client.encrypt_key,
        client.encrypt_nonce_tail,
    )


def test_split_key2_key_prefix_lengths() -> None:
    lengths = {c: len(split_key2(KEY2, c, False).encrypt_key) for c in AEAD_CIPHERS}
    assert lengths == {
        "AES-128-GCM": 16,
        "AES-192-GCM": 24,
        "AES-256-GCM": 32,
        "CHACHA20-POLY1305": 32,
    }


def test_split_key2_rejects_unknown_cipher_and_short_key() -> None:
    with pytest.raises(NegotiationError):
        split_key2(KEY2, "BF-CBC", False)
    with pytest.raises(ValueError):
        split_key2(KEY2[:255], "AES-256-GCM", False)


def test_ekm_parameters() -> None:
    assert EKM_DATA_KEYS_LABEL == b"EXPORTER-OpenVPN-datakeys"
    assert EKM_DATA_KEYS_LEN == 256
    assert p2p_peer_id_from_ekm(b"\x12\x34\x56") == 0x123456
