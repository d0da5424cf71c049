"""tls-crypt: openvpn's vectors, round-trips, key direction by role, replay, fuzzing."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openvpn_vectors import (
    CLIENT_RESET_V2_TLS_CRYPT,
    DYN_TLS_CRYPT_EKM,
    DYN_TLS_CRYPT_EXPECTED,
    DYN_TLS_CRYPT_PLAINTEXT,
    PKT_STATIC_KEY,
)

from xdp_ovpn.proto.constants import Opcode
from xdp_ovpn.proto.errors import AuthError, ProtocolError, ReplayError
from xdp_ovpn.proto.packet import ControlPacket, decode_control, encode_control
from xdp_ovpn.proto.statickey import StaticKey, parse_static_key
from xdp_ovpn.proto.tls_crypt import TLSCrypt, open_sealed, seal

KEY = parse_static_key(PKT_STATIC_KEY)
SID = bytes.fromhex("0102030405060708")
PLAIN = encode_control(ControlPacket(Opcode.CONTROL_V1, 1, SID, (4,), SID[::-1], 9, b"data"))


def test_openvpn_reset_unwraps_on_the_server() -> None:
    # test_pkt.c: tls_pre_decrypt_lite with a tls-crypt server accepts this reset.
    p = decode_control(TLSCrypt(KEY, is_server=True).unwrap(CLIENT_RESET_V2_TLS_CRYPT, 0.0))
    assert (p.opcode, p.packet_id, p.acks) == (Opcode.HARD_RESET_CLIENT_V2, 0, ())
    assert p.session_id == CLIENT_RESET_V2_TLS_CRYPT[1:9]


def test_openvpn_reset_does_not_unwrap_on_a_client() -> None:
    with pytest.raises(AuthError):
        TLSCrypt(KEY, is_server=False).unwrap(CLIENT_RESET_V2_TLS_CRYPT, 0.0)


def test_every_flipped_byte_is_rejected() -> None:
    for i in range(len(CLIENT_RESET_V2_TLS_CRYPT)):
        bad = bytearray(CLIENT_RESET_V2_TLS_CRYPT)
        bad[i] = 0x23 if bad[i] != 0x23 else 0x24  # as test_pkt.c does
        with pytest.raises(ProtocolError):
            TLSCrypt(KEY, is_server=True).unwrap(bytes(bad), 0.0)


def test_dynamic_tls_crypt_known_answer() -> None:
    # test_tls_crypt.c test_secure_reneg_key: client side, EKM = 0xba * 256, packet-id
    # (1, time 0), plaintext "1234567890", no header before the packet-id.
    for original in (None, StaticKey(bytes(256))):  # XOR with zeros changes nothing
        client = TLSCrypt.dynamic(DYN_TLS_CRYPT_EKM, is_server=False, original=original)
        pid = client.sender.next(0.0)
        sealed = seal(*client.send_keys, pid, DYN_TLS_CRYPT_PLAINTEXT)
        assert pid + sealed == DYN_TLS_CRYPT_EXPECTED
        server = TLSCrypt.dynamic(DYN_TLS_CRYPT_EKM, is_server=True, original=original)
        assert open_sealed(*server.recv_keys, pid, sealed) == DYN_TLS_CRYPT_PLAINTEXT
    other = TLSCrypt.dynamic(DYN_TLS_CRYPT_EKM, False, StaticKey(b"\x42" * 256))
    assert seal(*other.send_keys, pid, DYN_TLS_CRYPT_PLAINTEXT) != DYN_TLS_CRYPT_EXPECTED[8:]


def test_round_trip_and_layout() -> None:
    client, server = TLSCrypt(KEY, False), TLSCrypt(KEY, True)
    wire = client.wrap(PLAIN, 77.0)
    assert len(wire) == len(PLAIN) + client.overhead == len(PLAIN) + 40
    assert wire[:9] == PLAIN[:9] and wire[9:17] == bytes.fromhex("000000010000004d")
    assert PLAIN[9:] not in wire  # the rest is encrypted
    assert server.unwrap(wire, 77.0) == PLAIN
    assert client.unwrap(server.wrap(PLAIN, 78.0), 78.0) == PLAIN


def test_same_role_cannot_read_itself() -> None:
    with pytest.raises(AuthError):
        TLSCrypt(KEY, True).unwrap(TLSCrypt(KEY, True).wrap(PLAIN, 0.0), 0.0)


def test_replay_rejected_after_authentication() -> None:
    client, server = TLSCrypt(KEY, False), TLSCrypt(KEY, True, replay_window=4)
    w = [client.wrap(PLAIN, 0.0) for _ in range(8)]
    server.unwrap(w[1], 0.0)
    server.unwrap(w[0], 0.0)
    with pytest.raises(ReplayError):
        server.unwrap(w[0], 0.0)
    server.unwrap(w[7], 0.0)
    with pytest.raises(ReplayError):
        server.unwrap(w[2], 0.0)  # behind a window of 4


@given(st.binary(max_size=200))
def test_random_bytes_give_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        TLSCrypt(KEY, True).unwrap(data, 0.0)


@given(st.integers(0, len(CLIENT_RESET_V2_TLS_CRYPT) - 1))
def test_truncated_packets_give_only_protocol_errors(cut: int) -> None:
    with pytest.raises(ProtocolError):
        TLSCrypt(KEY, True).unwrap(CLIENT_RESET_V2_TLS_CRYPT[:cut], 0.0)
