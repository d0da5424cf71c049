"""Cipher negotiation: server push choice, client checks, 2.6 p2p rules (ssl_ncp.c, multi.c)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xdp_ovpn.proto.constants import AEAD_CIPHERS, IVProto
from xdp_ovpn.proto.errors import NegotiationError
from xdp_ovpn.proto.ncp import (
    P2P_DEFAULT_PEER_ID,
    check_pushed_cipher,
    client_cipher_without_push,
    negotiate_p2p,
    normalize_cipher,
    parse_data_ciphers,
    peer_supports_ncp,
    select_p2p_cipher,
    select_server_cipher,
)

OURS = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")
P2P_BITS = IVProto.DATA_V2 | IVProto.NCP_P2P


def test_parse_data_ciphers_normalises_and_drops_missing_optional() -> None:
    assert parse_data_ciphers("aes-256-gcm:?BF-CBC:ChaCha20-Poly1305:AES-256-GCM") == (
        "AES-256-GCM",
        "CHACHA20-POLY1305",
    )


@pytest.mark.parametrize("spec", ["AES-256-CBC", "none", "?BF-CBC", ""])
def test_parse_data_ciphers_rejects_unusable(spec: str) -> None:
    with pytest.raises(NegotiationError):
        parse_data_ciphers(spec)


def test_normalize_cipher_rejects_non_aead() -> None:
    with pytest.raises(NegotiationError, match="AEAD"):
        normalize_cipher("BF-CBC")


def test_server_takes_first_of_its_list_the_client_has() -> None:
    info = {"IV_CIPHERS": "CHACHA20-POLY1305:AES-128-GCM"}
    assert select_server_cipher(OURS, info) == "AES-128-GCM"


def test_server_uses_ncp2_pair_without_iv_ciphers() -> None:
    assert select_server_cipher(("CHACHA20-POLY1305", "AES-128-GCM"), {"IV_NCP": "2"}) == (
        "AES-128-GCM"
    )


def test_server_honours_occ_cipher_only_without_iv_ciphers() -> None:
    assert select_server_cipher(OURS, {}, remote_cipher="CHACHA20-POLY1305") == (
        "CHACHA20-POLY1305"
    )
    with pytest.raises(NegotiationError, match="no shared cipher"):
        select_server_cipher(
            ("CHACHA20-POLY1305",), {"IV_CIPHERS": "AES-256-GCM"}, remote_cipher="CHACHA20-POLY1305"
        )


def test_server_fallback_only_when_client_says_nothing() -> None:
    assert select_server_cipher(OURS, {}, fallback="aes-128-gcm") == "AES-128-GCM"
    with pytest.raises(NegotiationError, match="no shared cipher"):
        select_server_cipher(("AES-256-GCM",), {"IV_CIPHERS": "BF-CBC"}, fallback="AES-256-GCM")
    with pytest.raises(NegotiationError, match="data-ciphers-fallback"):
        select_server_cipher(OURS, {})


def test_peer_supports_ncp() -> None:
    assert peer_supports_ncp({"IV_CIPHERS": "AES-256-GCM"})
    assert peer_supports_ncp({"IV_NCP": "2"})
    assert not peer_supports_ncp({"IV_NCP": "1"})


def test_client_checks_pushed_cipher() -> None:
    assert check_pushed_cipher("AES-128-GCM", OURS, None) == "AES-128-GCM"
    assert check_pushed_cipher("AES-192-GCM", ("AES-256-GCM",), "AES-192-GCM") == "AES-192-GCM"
    with pytest.raises(NegotiationError):
        check_pushed_cipher("AES-192-GCM", OURS, None)
    with pytest.raises(NegotiationError):
        check_pushed_cipher("BF-CBC", OURS, None)


def test_client_without_pushed_cipher() -> None:
    assert client_cipher_without_push("AES-256-GCM", OURS, None) == "AES-256-GCM"
    assert client_cipher_without_push(None, OURS, "AES-128-GCM") == "AES-128-GCM"
    with pytest.raises(NegotiationError):
        client_cipher_without_push("AES-192-GCM", OURS, "AES-128-GCM")
    with pytest.raises(NegotiationError):
        client_cipher_without_push(None, OURS, None)


def test_p2p_both_sides_pick_server_preference() -> None:
    server_list = ("CHACHA20-POLY1305", "AES-256-GCM")
    client_list = ("AES-256-GCM", "CHACHA20-POLY1305")
    on_server = select_p2p_cipher(server_list, {"IV_CIPHERS": ":".join(client_list)}, True)
    on_client = select_p2p_cipher(client_list, {"IV_CIPHERS": ":".join(server_list)}, False)
    assert on_server == on_client == "CHACHA20-POLY1305"


def test_p2p_fallback_and_failure() -> None:
    assert select_p2p_cipher(OURS, {}, True, fallback="AES-256-GCM") == "AES-256-GCM"
    with pytest.raises(NegotiationError):
        select_p2p_cipher(("AES-256-GCM",), {"IV_CIPHERS": "AES-128-GCM"}, False)


def test_p2p_peer_id_from_export_or_fixed() -> None:
    info = {"IV_CIPHERS": "AES-256-GCM", "IV_PROTO": str(int(P2P_BITS | IVProto.TLS_KEY_EXPORT))}
    params = negotiate_p2p(OURS, info, True, export_peer_id=b"\xab\xcd\xef")
    assert (params.cipher, params.peer_id, params.use_ekm, params.cc_exit) == (
        "AES-256-GCM",
        0xABCDEF,
        True,
        False,
    )
    no_ekm = negotiate_p2p(OURS, info, True, export_peer_id=b"\xab\xcd\xef", local_ekm=False)
    assert (no_ekm.peer_id, no_ekm.use_ekm) == (P2P_DEFAULT_PEER_ID, False)


def test_p2p_cc_exit_flag() -> None:
    info = {"IV_CIPHERS": "AES-256-GCM", "IV_PROTO": str(int(P2P_BITS | IVProto.CC_EXIT_NOTIFY))}
    params = negotiate_p2p(OURS, info, False)
    assert params.cc_exit and not params.use_ekm and params.peer_id == 0x76706E


def test_p2p_epoch_format_needs_both_a_negotiated_cipher_and_the_bit() -> None:
    bits = str(int(P2P_BITS | IVProto.DATA_EPOCH))
    info = {"IV_CIPHERS": "AES-256-GCM", "IV_PROTO": bits}
    assert negotiate_p2p(OURS, info, True, local_epoch=True).epoch
    assert not negotiate_p2p(OURS, info, True).epoch  # we did not announce it
    no_bit = {"IV_CIPHERS": "AES-256-GCM", "IV_PROTO": str(int(P2P_BITS))}
    assert not negotiate_p2p(OURS, no_bit, True, local_epoch=True).epoch
    # The fallback cipher is not negotiated: 2.7 keeps the 2.6 format with it.
    fallback = negotiate_p2p(OURS, {"IV_PROTO": bits}, True, "AES-256-GCM", local_epoch=True)
    assert fallback.cipher == "AES-256-GCM" and not fallback.epoch


def test_p2p_requires_26_peer() -> None:
    with pytest.raises(NegotiationError, match="NCP_P2P"):
        negotiate_p2p(OURS, {"IV_PROTO": "2", "IV_CIPHERS": "AES-256-GCM"}, True)


@given(st.text(max_size=200))
def test_parse_data_ciphers_only_raises_negotiation_error(spec: str) -> None:
    try:
        ciphers = parse_data_ciphers(spec)
    except NegotiationError:
        return
    assert ciphers and all(c in AEAD_CIPHERS for c in ciphers)


@given(st.dictionaries(st.sampled_from(["IV_CIPHERS", "IV_NCP", "IV_PROTO"]), st.text(max_size=60)))
def test_negotiation_on_arbitrary_peer_info_only_raises_negotiation_error(info: dict) -> None:
    for call in (
        lambda: select_server_cipher(OURS, info),
        lambda: negotiate_p2p(OURS, info, True).cipher,
        lambda: select_p2p_cipher(OURS, info, False),
    ):
        with contextlib.suppress(NegotiationError):
            assert call() in OURS
