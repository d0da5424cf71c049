"""Epoch key derivation against OpenVPN's own known answers, and when the format is agreed.

Vectors from OpenVPN/openvpn at commit 3de926089fdebd79b9d25e80c31e45c1e044911d,
tests/unit_tests/openvpn/test_crypto.c; each test names the C function it comes from.
(The RFC 5869 cases there are Appendix A's expand step, with A's PRKs as input.)
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from xdp_ovpn.proto.constants import IVProto
from xdp_ovpn.proto.epochkeys import (
    EpochKey,
    epoch_format_agreed,
    epoch_format_pushed,
    expand_label,
    hkdf_expand,
    initial_epoch_keys,
)

RFC5869_A1_PRK = bytes.fromhex(
    "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
)


def test_hkdf_expand_rfc5869_case_1():
    """crypto_test_hkdf_expand_testa1"""
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    okm = bytes.fromhex(
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    assert hkdf_expand(RFC5869_A1_PRK, info, 42) == okm


def test_hkdf_expand_rfc5869_case_2():
    """crypto_test_hkdf_expand_testa2: three HMAC blocks."""
    prk = bytes.fromhex("06a6b88c5853361a06104c9ceb35b45cef760014904671014a193f40c15fc244")
    info = bytes(range(0xB0, 0x100))
    okm = bytes.fromhex(
        "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
        "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
        "cc30c58179ec3e87c14c01d5c1f3434f1d87"
    )
    assert hkdf_expand(prk, info, 82) == okm


def test_hkdf_expand_rfc5869_case_3_empty_info():
    """crypto_test_hkdf_expand_testa3"""
    prk = bytes.fromhex("19ef24a32c717b167f33a91d6f648bdf96596776afdb6377ac434c1c293ccb04")
    okm = bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    assert hkdf_expand(prk, b"", 42) == okm


def test_hkdf_expand_with_openvpns_own_label():
    """crypto_test_hkdf_expand_test_ovpn: the info is an "ovpn unit test" HkdfLabel."""
    info = bytes.fromhex("001b0e6f76706e20756e6974207465737400")
    okm = bytes.fromhex("875a8eec18556380b8d933ed323c2df8e8eccf4972e683f06a83ac")
    assert hkdf_expand(RFC5869_A1_PRK, info, 27) == okm


def test_expand_label():
    """crypto_test_ovpn_label_expand"""
    out = expand_label(RFC5869_A1_PRK, b"unit test", 16)
    assert out == bytes.fromhex("185eaa1c7f228ab8eb29773214d92046")


def test_expand_label_matches_an_independent_hkdf():
    """crypto_test_ovpn_expand_openssl3 checks against OpenSSL's TLS 1.3 KDF; we check
    against the cryptography package's HKDF-Expand over the same HkdfLabel."""
    info = bytes.fromhex("001b") + bytes([14]) + b"ovpn unit test" + b"\x00"
    theirs = HKDFExpand(hashes.SHA256(), 27, info).derive(RFC5869_A1_PRK)
    assert expand_label(RFC5869_A1_PRK, b"unit test", 27) == theirs


def test_data_key_of_epoch_17():
    """epoch_test_derive_data_key: E17 = {19, 12, 0...}, AES-192-GCM."""
    e17 = EpochKey(17, bytes([19, 12]) + bytes(30))
    key = e17.data_key("AES-192-GCM")
    assert key.epoch == 17
    assert key.key == bytes.fromhex("ed8533db1c28ace418e9006ab29c17417d60ebe6cd90bf0a")
    assert key.implicit_iv == bytes.fromhex("86890aabf032cb59f4cfa34e")


def test_next_epoch_key_is_the_datakey_upd_label():
    e1 = EpochKey(1, RFC5869_A1_PRK)
    e2 = e1.next()
    assert e2.epoch == 2
    assert e2.secret == expand_label(RFC5869_A1_PRK, b"datakey upd", 32)
    assert e2.secret != e1.secret and e2.next().epoch == 3


def test_chain_ends_at_65535():
    with pytest.raises(ValueError):
        EpochKey(0xFFFF, bytes(32)).next()
    with pytest.raises(ValueError):
        EpochKey(0, bytes(32))


def test_key_material_is_not_in_repr():
    assert "secret" not in repr(EpochKey(1, RFC5869_A1_PRK))


def test_initial_keys_come_from_the_cipher_halves_of_key2():
    """ssl.c: init_epoch_keys, E1 = the first 32 bytes of each direction's cipher key."""
    key2 = bytes(range(256))
    client_send, client_recv = initial_epoch_keys(key2, is_server=False)
    server_send, server_recv = initial_epoch_keys(key2, is_server=True)
    assert client_send == server_recv == EpochKey(1, key2[:32])
    assert server_send == client_recv == EpochKey(1, key2[128:160])


@pytest.mark.parametrize(
    ("bits", "cipher", "supported", "agreed"),
    [
        (IVProto.DATA_V2 | IVProto.DATA_EPOCH, "AES-256-GCM", True, True),
        (IVProto.DATA_V2 | IVProto.DATA_EPOCH, "CHACHA20-POLY1305", True, True),
        (IVProto.DATA_V2 | IVProto.DATA_EPOCH, "AES-256-GCM", False, False),  # we do not offer it
        (IVProto.DATA_V2, "AES-256-GCM", True, False),  # a 2.6 peer
        (IVProto.DATA_V2 | IVProto.DATA_EPOCH, "BF-CBC", True, False),  # not AEAD
    ],
)
def test_epoch_format_agreed_only_with_a_peer_that_offers_it(bits, cipher, supported, agreed):
    peer_info = {"IV_PROTO": str(int(bits))}
    assert epoch_format_agreed(peer_info, cipher, supported) is agreed


def test_pushed_protocol_flags():
    assert epoch_format_pushed(["cc-exit", "tls-ekm", "aead-epoch"])
    assert not epoch_format_pushed(["cc-exit", "tls-ekm"])
