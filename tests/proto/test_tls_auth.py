"""tls-auth: openvpn's own packets, round-trips per digest and key-direction, replay, fuzzing."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openvpn_vectors import CLIENT_CONTROL_TLS_AUTH, CLIENT_RESET_V2_TLS_AUTH, PKT_STATIC_KEY

from xdp_ovpn.proto.constants import Opcode
from xdp_ovpn.proto.errors import AuthError, ProtocolError, ReplayError
from xdp_ovpn.proto.packet import ControlPacket, decode_control, encode_control
from xdp_ovpn.proto.statickey import StaticKey, parse_static_key
from xdp_ovpn.proto.tls_auth import TLSAuth

KEY = parse_static_key(PKT_STATIC_KEY)
SID = bytes.fromhex("0102030405060708")
PLAIN = encode_control(ControlPacket(Opcode.CONTROL_V1, 0, SID, (), None, 3, b"hello"))
# (our direction, peer direction) pairs that talk to each other
PAIRS = [(0, 1), (1, 0), (None, None)]


def test_openvpn_reset_verifies_with_key_direction_0() -> None:
    # test_pkt.c: the server (KEY_DIRECTION_NORMAL, SHA1) accepts this reset.
    plain = TLSAuth(KEY, 0, "SHA1").unwrap(CLIENT_RESET_V2_TLS_AUTH, 0.0)
    p = decode_control(plain)
    assert (p.opcode, p.key_id, p.packet_id) == (Opcode.HARD_RESET_CLIENT_V2, 0, 0)
    assert p.session_id == CLIENT_RESET_V2_TLS_AUTH[1:9]


def test_openvpn_control_packet_verifies_and_carries_client_hello() -> None:
    p = decode_control(TLSAuth(KEY, 0, "SHA1").unwrap(CLIENT_CONTROL_TLS_AUTH, 0.0))
    assert p.opcode == Opcode.CONTROL_V1 and p.packet_id == 1
    assert p.payload[:3] == bytes.fromhex("160301")  # a TLS handshake record


@pytest.mark.parametrize("direction", [1, None])
def test_openvpn_reset_fails_with_other_key_directions(direction: int | None) -> None:
    with pytest.raises(AuthError):
        TLSAuth(KEY, direction, "SHA1").unwrap(CLIENT_RESET_V2_TLS_AUTH, 0.0)


def test_every_flipped_byte_is_rejected() -> None:
    for i in range(len(CLIENT_RESET_V2_TLS_AUTH)):
        bad = bytearray(CLIENT_RESET_V2_TLS_AUTH)
        bad[i] ^= 0x23
        with pytest.raises(ProtocolError):
            TLSAuth(KEY, 0, "SHA1").unwrap(bytes(bad), 0.0)


@pytest.mark.parametrize("digest,mac_len", [("SHA1", 20), ("SHA256", 32), ("SHA512", 64)])
@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_round_trip(digest: str, mac_len: int, ours: int | None, theirs: int | None) -> None:
    a, b = TLSAuth(KEY, ours, digest), TLSAuth(KEY, theirs, digest)
    wire = a.wrap(PLAIN, 1000.0)
    assert a.overhead == mac_len + 8 and len(wire) == len(PLAIN) + a.overhead
    # layout: op|kid, session-id, HMAC, packet-id (1, time 1000), then the rest
    assert wire[:9] == PLAIN[:9] and wire[9 + mac_len :][:8] == bytes.fromhex("00000001000003e8")
    assert b.unwrap(wire, 1000.0) == PLAIN
    assert a.unwrap(b.wrap(PLAIN, 1.0), 1.0) == PLAIN


def test_wrong_direction_or_digest_fails() -> None:
    wire = TLSAuth(KEY, 0, "SHA256").wrap(PLAIN, 0.0)
    with pytest.raises(AuthError):
        TLSAuth(KEY, 0, "SHA256").unwrap(wire, 0.0)
    with pytest.raises(ProtocolError):
        TLSAuth(KEY, 1, "SHA512").unwrap(wire, 0.0)
    with pytest.raises(AuthError):
        TLSAuth(StaticKey.generate(), 1, "SHA256").unwrap(wire, 0.0)


def test_unknown_digest_or_direction_refused() -> None:
    with pytest.raises(ValueError):
        TLSAuth(KEY, 0, "MD4")
    with pytest.raises(ValueError):
        TLSAuth(KEY, 2, "SHA1")


def test_replay_and_reordering() -> None:
    a, b = TLSAuth(KEY, 0), TLSAuth(KEY, 1)
    w1, w2, w3 = (a.wrap(PLAIN, 5.0) for _ in range(3))
    assert b.unwrap(w2, 5.0) == PLAIN
    assert b.unwrap(w1, 5.0) == PLAIN  # reordered, inside the window
    with pytest.raises(ReplayError):
        b.unwrap(w1, 5.0)
    with pytest.raises(ReplayError):
        b.unwrap(w2, 6.0)
    assert b.unwrap(w3, 6.0) == PLAIN


def test_replay_window_limit_and_time() -> None:
    a, b = TLSAuth(KEY, 0), TLSAuth(KEY, 1, replay_window=4, replay_time=15)
    wires = [a.wrap(PLAIN, 0.0) for _ in range(10)]
    b.unwrap(wires[0], 0.0)
    b.unwrap(wires[8], 1.0)
    with pytest.raises(ReplayError):
        b.unwrap(wires[3], 1.0)  # 5 behind the highest: outside a window of 4
    b.unwrap(wires[6], 2.0)
    with pytest.raises(ReplayError):
        b.unwrap(wires[7], 20.0)  # gap left open longer than replay-time


def test_forged_packet_does_not_move_the_window() -> None:
    a, b = TLSAuth(KEY, 0), TLSAuth(KEY, 1)
    good = a.wrap(PLAIN, 0.0)
    forged = bytearray(a.wrap(PLAIN, 0.0))
    forged[-1] ^= 1
    with pytest.raises(AuthError):
        b.unwrap(bytes(forged), 0.0)
    assert b.unwrap(good, 0.0) == PLAIN


@given(st.binary(max_size=200))
def test_random_bytes_give_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        TLSAuth(KEY, 0, "SHA256").unwrap(data, 0.0)


@given(st.integers(0, len(CLIENT_CONTROL_TLS_AUTH) - 1))
def test_truncated_packets_give_only_protocol_errors(cut: int) -> None:
    with pytest.raises(ProtocolError):
        TLSAuth(KEY, 0, "SHA1").unwrap(CLIENT_CONTROL_TLS_AUTH[:cut], 0.0)
