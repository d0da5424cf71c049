"""Codecs in proto/packet.py: round-trips, known layouts, and fuzzing."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xdp_ovpn.proto.constants import Opcode
from xdp_ovpn.proto.errors import ParseError, ProtocolError
from xdp_ovpn.proto.packet import (
    ControlPacket,
    DataV1Header,
    DataV2Header,
    TCPFramer,
    build_data_v1_header,
    build_data_v2_header,
    decode_control,
    decode_op,
    encode_control,
    encode_op,
    frame_tcp,
    parse_data_v1_header,
    parse_data_v2_header,
    peek_op,
)

SID = bytes.fromhex("0102030405060708")
RSID = bytes.fromhex("a1a2a3a4a5a6a7a8")
CONTROL_OPS = [
    Opcode.SOFT_RESET_V1,
    Opcode.CONTROL_V1,
    Opcode.HARD_RESET_CLIENT_V2,
    Opcode.HARD_RESET_SERVER_V2,
    Opcode.HARD_RESET_CLIENT_V3,
    Opcode.CONTROL_WKC_V1,
]


def test_op_byte_packs_opcode_and_key_id() -> None:
    assert encode_op(Opcode.DATA_V2, 1) == 0x49
    assert encode_op(Opcode.HARD_RESET_CLIENT_V2, 0) == 0x38
    assert decode_op(0x49) == (Opcode.DATA_V2, 1)
    assert decode_op(0x2F) == (Opcode.ACK_V1, 7)


@pytest.mark.parametrize("byte", [0x00, 0x07, 12 << 3, 0xFF])
def test_unknown_opcode_is_parse_error(byte: int) -> None:
    with pytest.raises(ParseError):
        decode_op(byte)


def test_peek_op_of_empty_packet() -> None:
    with pytest.raises(ParseError):
        peek_op(b"")


def test_hard_reset_layout() -> None:
    # The client's first packet of a plain (no tls-auth) session, as openvpn sends it:
    # 0x38, session-id, 0 acks, message packet-id 0, no payload.
    p = ControlPacket(Opcode.HARD_RESET_CLIENT_V2, 0, SID, packet_id=0)
    wire = encode_control(p)
    assert wire == bytes.fromhex("38 0102030405060708 00 00000000")
    assert decode_control(wire) == p


def test_control_with_acks_layout() -> None:
    p = ControlPacket(Opcode.CONTROL_V1, 2, SID, (1, 2), RSID, 5, b"tls")
    wire = encode_control(p)
    assert (
        wire
        == bytes.fromhex("22 0102030405060708 02 00000001 00000002 a1a2a3a4a5a6a7a8 00000005")
        + b"tls"
    )
    assert decode_control(wire) == p


def test_ack_v1_has_no_packet_id() -> None:
    p = ControlPacket(Opcode.ACK_V1, 0, SID, (7,), RSID)
    wire = encode_control(p)
    assert wire == bytes.fromhex("28 0102030405060708 01 00000007 a1a2a3a4a5a6a7a8")
    assert decode_control(wire) == p


def test_ack_v1_with_trailing_bytes_rejected() -> None:
    wire = encode_control(ControlPacket(Opcode.ACK_V1, 0, SID, (7,), RSID)) + b"x"
    with pytest.raises(ParseError):
        decode_control(wire)


def test_more_than_eight_acks_rejected() -> None:
    wire = bytes.fromhex("20 0102030405060708 09") + bytes(9 * 4 + 8 + 4)
    with pytest.raises(ParseError):
        decode_control(wire)


@pytest.mark.parametrize("op", [Opcode.DATA_V2, Opcode.DATA_V1, Opcode.HARD_RESET_CLIENT_V1])
def test_non_control_opcodes_rejected(op: Opcode) -> None:
    with pytest.raises(ParseError):
        decode_control(bytes([encode_op(op, 0)]) + bytes(20))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"acks": (1,)},  # acks without remote session-id
        {"remote_session_id": RSID},  # remote session-id without acks
        {"packet_id": None},  # CONTROL_V1 needs a packet-id
        {"session_id": b"short"},
        {"key_id": 8},
        {"acks": tuple(range(9)), "remote_session_id": RSID},
    ],
)
def test_invalid_control_packets_cannot_be_built(kwargs: dict) -> None:
    base = {"opcode": Opcode.CONTROL_V1, "key_id": 0, "session_id": SID, "packet_id": 1}
    with pytest.raises(ValueError):
        ControlPacket(**(base | kwargs))


control_packets = st.builds(
    lambda op, kid, sid, acks, rsid, pid, payload: ControlPacket(
        op,
        kid,
        sid,
        tuple(acks),
        rsid if acks else None,
        None if op == Opcode.ACK_V1 else pid,
        b"" if op == Opcode.ACK_V1 else payload,
    ),
    st.sampled_from([*CONTROL_OPS, Opcode.ACK_V1]),
    st.integers(0, 7),
    st.binary(min_size=8, max_size=8),
    st.lists(st.integers(0, 2**32 - 1), max_size=8),
    st.binary(min_size=8, max_size=8),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=64),
)


@given(control_packets)
def test_control_round_trip(p: ControlPacket) -> None:
    assert decode_control(encode_control(p)) == p


@given(control_packets, st.data())
def test_truncated_control_never_crashes(p: ControlPacket, data: st.DataObject) -> None:
    wire = encode_control(p)
    cut = data.draw(st.integers(0, len(wire)))
    with contextlib.suppress(ProtocolError):
        decode_control(wire[:cut])


@given(st.binary(max_size=200))
def test_random_bytes_give_only_protocol_errors(data: bytes) -> None:
    for parser in (decode_control, parse_data_v2_header, parse_data_v1_header, peek_op):
        with contextlib.suppress(ProtocolError):
            parser(data)


def test_data_v2_header_layout() -> None:
    hdr = build_data_v2_header(1, 0x123456, 0xDEADBEEF)
    assert hdr == bytes.fromhex("49 123456 deadbeef")
    assert parse_data_v2_header(hdr + bytes(16)) == DataV2Header(1, 0x123456, 0xDEADBEEF)


@given(st.integers(0, 7), st.integers(0, 0xFFFFFF), st.integers(0, 2**32 - 1))
def test_data_v2_round_trip(kid: int, peer_id: int, pid: int) -> None:
    assert parse_data_v2_header(build_data_v2_header(kid, peer_id, pid)) == DataV2Header(
        kid, peer_id, pid
    )


@given(st.integers(0, 7), st.integers(0, 2**32 - 1))
def test_data_v1_round_trip(kid: int, pid: int) -> None:
    hdr = build_data_v1_header(kid, pid)
    assert hdr[0] == (6 << 3) | kid
    assert parse_data_v1_header(hdr) == DataV1Header(kid, pid)


def test_data_parsers_check_the_opcode() -> None:
    with pytest.raises(ParseError):
        parse_data_v2_header(build_data_v1_header(0, 1) + bytes(8))
    with pytest.raises(ParseError):
        parse_data_v1_header(build_data_v2_header(0, 1, 1))
    with pytest.raises(ParseError):
        parse_data_v2_header(build_data_v2_header(0, 1, 1)[:7])


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=10), st.data())
def test_tcp_framer_reassembles_any_split(packets: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame_tcp(p) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    framer = TCPFramer()
    out: list[bytes] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += framer.feed(stream[a:b])
    assert out == packets


def test_tcp_zero_length_frame_rejected() -> None:
    with pytest.raises(ParseError):
        TCPFramer().feed(b"\x00\x00")


@given(st.lists(st.binary(max_size=100), max_size=8))
def test_tcp_framer_fed_random_bytes_gives_only_parse_errors(chunks: list[bytes]) -> None:
    framer = TCPFramer()
    with contextlib.suppress(ProtocolError):
        for chunk in chunks:
            for packet in framer.feed(chunk):
                assert 0 < len(packet) <= 0xFFFF
