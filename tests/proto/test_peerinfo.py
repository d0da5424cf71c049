"""Peer-info build/parse and the OCC options string."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xdp_ovpn.proto.constants import IVProto
from xdp_ovpn.proto.peerinfo import (
    CLIENT_IV_PROTO,
    P2P_IV_PROTO,
    build_peer_info,
    client_peer_info,
    iv_ciphers,
    iv_ncp,
    iv_proto,
    options_string,
    options_string_extract,
    parse_peer_info,
)

# Peer-info as an OpenVPN 2.6 client sends it (layout of ssl.c: push_peer_info).
OPENVPN_26_CLIENT = (
    "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n"
    "IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\n"
)


def test_parse_openvpn_client_peer_info() -> None:
    info = parse_peer_info(OPENVPN_26_CLIENT)
    assert info["IV_VER"] == "2.6.14"
    assert iv_ncp(info) == 2
    assert iv_ciphers(info) == ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]
    bits = iv_proto(info)
    assert IVProto.DATA_V2 in bits and IVProto.TLS_KEY_EXPORT in bits
    assert IVProto.CC_EXIT_NOTIFY in bits and IVProto.NCP_P2P not in bits


def test_parse_skips_invalid_lines_and_sanitises_values() -> None:
    info = parse_peer_info("garbage\nBAD KEY=1\n=x\nUV_X=a b$c(d`e\tf\r\nIV_A=1\nIV_A=2\n")
    assert info == {"UV_X": "a_b_c_d_e_f", "IV_A": "1"}


def test_parse_accepts_bytes_with_bad_utf8() -> None:
    assert parse_peer_info(b"IV_X=\xff\n") == {"IV_X": "_"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("990", 990), ("0", 0), ("-4", 0), ("12abc", 12), ("x", 0), (None, 0)],
)
def test_iv_proto_uses_sscanf_semantics(value: str | None, expected: int) -> None:
    info = {} if value is None else {"IV_PROTO": value}
    assert int(iv_proto(info)) == expected


def test_missing_ciphers_is_none() -> None:
    assert iv_ciphers({}) is None


def test_client_peer_info_round_trips_and_announces_what_we_do() -> None:
    info = client_peer_info(["AES-256-GCM", "AES-128-GCM"], tun_mtu=1400)
    parsed = parse_peer_info(build_peer_info(info))
    assert parsed == info
    assert parsed["IV_NCP"] == "2" and parsed["IV_MTU"] == "1400"
    assert iv_proto(parsed) == CLIENT_IV_PROTO
    assert IVProto.DATA_EPOCH not in CLIENT_IV_PROTO
    assert IVProto.DATA_V2 in CLIENT_IV_PROTO  # every other bit requires this one


def test_p2p_peer_info_has_no_ncp2_and_announces_p2p_ncp() -> None:
    info = client_peer_info(["AES-256-GCM", "AES-128-GCM"], pull=False)
    assert "IV_NCP" not in info and "IV_MTU" not in info
    assert iv_proto(info) == P2P_IV_PROTO
    assert IVProto.NCP_P2P in P2P_IV_PROTO


def test_epoch_bit_only_when_the_data_plane_has_the_format() -> None:
    for pull, bits in ((True, CLIENT_IV_PROTO), (False, P2P_IV_PROTO)):
        info = client_peer_info(["AES-256-GCM"], pull=pull, epoch=True)
        assert iv_proto(info) == bits | IVProto.DATA_EPOCH
        assert int(info["IV_PROTO"]) & 1 << 10  # IV_PROTO_DATA_EPOCH, ssl.h


def test_ncp2_needs_both_aes_gcm_ciphers() -> None:
    assert "IV_NCP" not in client_peer_info(["CHACHA20-POLY1305", "AES-256-GCM"])


def test_build_rejects_bad_lines() -> None:
    with pytest.raises(ValueError):
        build_peer_info({"IV X": "1"})
    with pytest.raises(ValueError):
        build_peer_info({"IV_X": "a\nIV_Y=b"})


# Strings printed by Debian's openvpn 2.6.14 at --verb 7 ("Local Options String").
@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"is_server": False},
            "V4,dev-type tun,link-mtu 1541,tun-mtu 1500,proto UDPv4,auth SHA1,keysize 128,"
            "key-method 2,tls-client",
        ),
        (
            {"is_server": False, "cipher": "AES-256-GCM"},
            "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,"
            "auth [null-digest],keysize 256,key-method 2,tls-client",
        ),
        (
            {"is_server": False, "cipher": "CHACHA20-POLY1305"},
            "V4,dev-type tun,link-mtu 1534,tun-mtu 1500,proto UDPv4,cipher CHACHA20-POLY1305,"
            "auth [null-digest],keysize 256,key-method 2,tls-client",
        ),
        (
            {"is_server": True, "cipher": "AES-128-GCM"},
            "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,cipher AES-128-GCM,"
            "auth [null-digest],keysize 128,key-method 2,tls-server",
        ),
        (
            {"is_server": False, "proto": "TCPv4_CLIENT"},
            "V4,dev-type tun,link-mtu 1543,tun-mtu 1500,proto TCPv4_CLIENT,auth SHA1,"
            "keysize 128,key-method 2,tls-client",
        ),
    ],
)
def test_options_string_matches_openvpn(kwargs: dict, expected: str) -> None:
    assert options_string(**kwargs) == expected


def test_options_string_extract() -> None:
    opts = options_string(False, cipher="AES-256-GCM")
    assert options_string_extract(opts, "cipher") == "AES-256-GCM"
    assert options_string_extract(opts, "tun-mtu") == "1500"
    assert options_string_extract(opts, "comp-lzo") is None


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_parse_peer_info_never_raises(data: str | bytes) -> None:
    info = parse_peer_info(data)
    iv_proto(info), iv_ncp(info), iv_ciphers(info)
