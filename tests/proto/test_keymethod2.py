"""Key method 2 message: exact layout, round trips, tolerance of old peers, fuzzing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xdp_ovpn.proto.errors import ParseError, ProtocolError
from xdp_ovpn.proto.keymethod2 import KeyMethod2

PM, R1, R2 = bytes([1]) * 48, bytes([2]) * 32, bytes([3]) * 32
OPTIONS = "V4,dev-type tun,link-mtu 1549,tun-mtu 1500,proto UDPv4,key-method 2,tls-client"


def spec_string(s: bytes) -> bytes:
    """Layout from ssl.c write_string/write_empty_string: u16 len incl. NUL, or a bare 0."""
    return struct.pack("!H", len(s) + 1) + s + b"\0" if s else b"\0\0"


def test_client_message_layout_is_byte_exact() -> None:
    msg = KeyMethod2(PM, R1, R2, OPTIONS, "alice", "s3cret", "IV_VER=2.6.14\nIV_PROTO=2\n")
    expected = (
        b"\0\0\0\0\x02"
        + PM
        + R1
        + R2
        + spec_string(OPTIONS.encode())
        + spec_string(b"alice")
        + spec_string(b"s3cret")
        + spec_string(b"IV_VER=2.6.14\nIV_PROTO=2\n")
    )
    assert msg.encode() == expected


def test_server_message_has_no_pre_master_and_empty_strings() -> None:
    msg = KeyMethod2(None, R1, R2, OPTIONS)
    wire = msg.encode()
    assert wire == b"\0\0\0\0\x02" + R1 + R2 + spec_string(OPTIONS.encode()) + b"\0\0" * 3
    assert KeyMethod2.decode(wire, is_server_message=True) == msg


def test_round_trip_client_message() -> None:
    msg = KeyMethod2(PM, R1, R2, OPTIONS, "bob", "pässword", "IV_PLAT=linux\n")
    assert KeyMethod2.decode(msg.encode(), is_server_message=False) == msg


def test_generate_uses_rng_and_role() -> None:
    counter = iter(range(256))

    def rng(n: int) -> bytes:
        return bytes([next(counter)]) * n

    client = KeyMethod2.generate(False, OPTIONS, rng=rng)
    server = KeyMethod2.generate(True, OPTIONS, rng=rng)
    assert (client.pre_master, client.random1, client.random2) == (
        b"\0" * 48,
        b"\1" * 32,
        b"\2" * 32,
    )
    assert server.pre_master is None
    assert server.random1 == b"\3" * 32


def test_message_ending_after_options_is_accepted() -> None:
    wire = b"\0\0\0\0\x02" + R1 + R2 + spec_string(b"V4")
    msg = KeyMethod2.decode(wire, is_server_message=True)
    assert (msg.options, msg.username, msg.password, msg.peer_info) == ("V4", "", "", "")


def test_key_method_flags_in_high_nibble_are_ignored() -> None:
    wire = bytearray(KeyMethod2(None, R1, R2, "V4").encode())
    wire[4] = 0x12
    assert KeyMethod2.decode(bytes(wire), is_server_message=True).options == "V4"


def test_text_stops_at_first_nul_like_c() -> None:
    wire = b"\0\0\0\0\x02" + R1 + R2 + struct.pack("!H", 6) + b"V4\0xyz"
    assert KeyMethod2.decode(wire, is_server_message=True).options == "V4"


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"", "header"),
        (b"\0\0\0\0\x01" + R1 + R2, "key method"),
        (b"\0\0\0\0\x02" + PM[:10], "pre_master"),
        (b"\0\0\0\0\x02" + PM + R1 + R2[:5], "random2"),
        (b"\0\0\0\0\x02" + PM + R1 + R2, "options"),
        (b"\0\0\0\0\x02" + PM + R1 + R2 + b"\0\x09V4\0", "options"),
        (b"\0\0\0\0\x02" + PM + R1 + R2 + spec_string(b"x" * 600), "too long"),
        (b"\0\0\0\0\x02" + PM + R1 + R2 + spec_string(b"V4") + b"\0\x05ab", "username"),
    ],
)
def test_malformed_messages_raise_parse_error(wire: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        KeyMethod2.decode(wire, is_server_message=False)


def test_encode_rejects_bad_fields() -> None:
    with pytest.raises(ValueError):
        KeyMethod2(PM[:4], R1, R2, "V4").encode()
    with pytest.raises(ValueError):
        KeyMethod2(PM, R1, R2, "x" * 512).encode()
    with pytest.raises(ValueError):
        KeyMethod2(PM, R1, R2, "V4", username="a\0b").encode()


@given(st.binary(max_size=400), st.booleans())
def test_random_bytes_only_raise_protocol_errors(data: bytes, server: bool) -> None:
    with contextlib.suppress(ProtocolError):
        KeyMethod2.decode(data, is_server_message=server)


@given(st.integers(min_value=0, max_value=300), st.booleans())
def test_every_truncation_parses_or_raises_protocol_error(cut: int, server: bool) -> None:
    wire = KeyMethod2(None if server else PM, R1, R2, OPTIONS, "u", "p", "IV_VER=x\n").encode()
    with contextlib.suppress(ProtocolError):
        KeyMethod2.decode(wire[:cut], is_server_message=server)
