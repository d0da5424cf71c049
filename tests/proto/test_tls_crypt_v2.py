"""tls-crypt-v2: client keys from openvpn, the V3 reset, early negotiation and CONTROL_WKC_V1."""

import base64
import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openvpn_vectors import (
    TLS_CRYPT_V2_CLIENT_KEY,
    TLS_CRYPT_V2_CLIENT_KEY_METADATA,
    TLS_CRYPT_V2_SERVER_KEY,
    needs_openvpn,
    run_openvpn,
)

from xdp_ovpn.proto.constants import Opcode
from xdp_ovpn.proto.errors import AuthError, ParseError, ProtocolError, ReplayError
from xdp_ovpn.proto.packet import ControlPacket, decode_control, encode_control
from xdp_ovpn.proto.statickey import (
    TLSCryptV2ServerKey,
    format_tls_crypt_v2_server_key,
    parse_tls_crypt_v2_client_key,
    parse_tls_crypt_v2_server_key,
)
from xdp_ovpn.proto.tls_crypt_v2 import (
    MAX_METADATA_LEN,
    METADATA_TYPE_TIMESTAMP,
    METADATA_TYPE_USER,
    EarlyNegotiation,
    TLSCryptV2Client,
    TLSCryptV2Server,
    build_early_negotiation,
    generate_client_key,
    has_early_negotiation,
    metadata_timestamp,
    parse_early_negotiation,
)

SERVER_KEY = parse_tls_crypt_v2_server_key(TLS_CRYPT_V2_SERVER_KEY)
CLIENT_KEY = parse_tls_crypt_v2_client_key(TLS_CRYPT_V2_CLIENT_KEY)
CSID = bytes.fromhex("c1c2c3c4c5c6c7c8")
SSID = bytes.fromhex("5151515151515151")
RESET_V3 = encode_control(ControlPacket(Opcode.HARD_RESET_CLIENT_V3, 0, CSID, packet_id=0))


def test_openvpn_unit_test_client_keys_unwrap_with_their_server_key() -> None:
    # test_tls_crypt.c: Kc is 0x00..0xff; one key has a timestamp (0), one user data.
    server = TLSCryptV2Server(SERVER_KEY)
    info = server.unwrap_client_key(CLIENT_KEY.wkc)
    assert info.key.data == bytes(range(256)) == CLIENT_KEY.key.data
    assert info.metadata_type == METADATA_TYPE_TIMESTAMP
    assert metadata_timestamp(info.metadata_type, info.metadata) == 0
    user = parse_tls_crypt_v2_client_key(TLS_CRYPT_V2_CLIENT_KEY_METADATA)
    info = server.unwrap_client_key(user.wkc)
    assert info.metadata_type == METADATA_TYPE_USER
    assert info.metadata == base64.b64decode("AABBCCDD")
    assert metadata_timestamp(info.metadata_type, info.metadata) is None


def test_client_key_from_another_server_is_rejected() -> None:
    with pytest.raises(AuthError):
        TLSCryptV2Server(TLSCryptV2ServerKey.generate()).unwrap_client_key(CLIENT_KEY.wkc)


def test_generated_client_keys_round_trip() -> None:
    server = TLSCryptV2Server(SERVER_KEY)
    key = generate_client_key(SERVER_KEY, timestamp=1_700_000_000)
    info = server.unwrap_client_key(key.wkc)
    assert info.key == key.key
    assert metadata_timestamp(info.metadata_type, info.metadata) == 1_700_000_000
    big = generate_client_key(SERVER_KEY, b"m" * (MAX_METADATA_LEN - 1))
    assert len(big.wkc) == 1024
    assert server.unwrap_client_key(big.wkc).metadata == b"m" * (MAX_METADATA_LEN - 1)
    with pytest.raises(ValueError):
        generate_client_key(SERVER_KEY, b"m" * MAX_METADATA_LEN)
    with pytest.raises(ValueError):
        generate_client_key(SERVER_KEY)


def test_reset_v3_with_early_negotiation_and_wkc_resend() -> None:
    client = TLSCryptV2Client(CLIENT_KEY)
    wire = client.wrap(RESET_V3, 10.0)
    assert wire.endswith(CLIENT_KEY.wkc)
    assert wire[9:13] == bytes.fromhex("0f000001")  # counter started at 0x0f000000
    assert has_early_negotiation(wire)

    # A stateless server unwraps the reset and answers, asking for the WKc again.
    wrapper, plain, metadata, mtype = TLSCryptV2Server(SERVER_KEY).unwrap_client_reset(wire, 10.0)
    assert plain == RESET_V3 and (mtype, metadata) == (METADATA_TYPE_TIMESTAMP, bytes(8))
    payload = build_early_negotiation(EarlyNegotiation(resend_wkc=True))
    assert payload == bytes.fromhex("0001 0002 0001")  # type flags, len 2, RESEND_WKC
    reply = ControlPacket(Opcode.HARD_RESET_SERVER_V2, 0, SSID, (0,), CSID, 0, payload)
    got = decode_control(client.unwrap(wrapper.wrap(encode_control(reply), 10.0), 10.0))
    assert client.note_server_reset(got.payload).resend_wkc
    assert client.control_opcode(1) == Opcode.CONTROL_WKC_V1
    assert client.control_opcode(2) == Opcode.CONTROL_V1

    # The first CONTROL packet carries the WKc; a fresh server instance picks it up.
    ctl = encode_control(
        ControlPacket(Opcode.CONTROL_WKC_V1, 0, CSID, (0,), SSID, 1, b"\x16\x03\x01")
    )
    wire2 = client.wrap(ctl, 11.0)
    assert wire2.endswith(CLIENT_KEY.wkc)
    session_wrap, plain2, _, _ = TLSCryptV2Server(SERVER_KEY).unwrap_client_reset(wire2, 11.0)
    assert plain2 == ctl
    # A retransmission (wrapped afresh, new packet-id) reaching the established session is
    # unwrapped too, its WKc ignored; a replayed copy is not.
    with pytest.raises(ReplayError):
        session_wrap.unwrap(wire2, 11.0)
    wire3 = client.wrap(ctl, 12.0)
    assert session_wrap.unwrap(wire3, 12.0) == ctl
    assert client.unwrap(session_wrap.wrap(encode_control(reply), 12.0), 12.0)


def test_reset_v3_without_early_negotiation() -> None:
    client = TLSCryptV2Client(CLIENT_KEY, early_negotiation=False)
    wire = client.wrap(RESET_V3, 0.0)
    assert wire[9:13] == bytes.fromhex("00000001") and not has_early_negotiation(wire)
    assert client.note_server_reset(b"\x16\x03") == EarlyNegotiation()  # not parsed as TLVs
    assert client.control_opcode(1) == Opcode.CONTROL_V1


def test_plain_control_packets_carry_no_wkc() -> None:
    client = TLSCryptV2Client(CLIENT_KEY)
    ctl = encode_control(ControlPacket(Opcode.CONTROL_V1, 0, CSID, (), None, 2, b"x"))
    assert len(client.wrap(ctl, 0.0)) == len(ctl) + client.overhead
    with pytest.raises(ParseError):
        TLSCryptV2Server(SERVER_KEY).unwrap_client_reset(client.wrap(ctl, 0.0), 0.0)


def test_tampered_reset_rejected() -> None:
    wire = bytearray(TLSCryptV2Client(CLIENT_KEY).wrap(RESET_V3, 0.0))
    for i in (0, 5, 12, 30, 60, len(wire) - 100, len(wire) - 3, len(wire) - 1):
        bad = bytearray(wire)
        bad[i] ^= 0x01
        with pytest.raises(ProtocolError):
            TLSCryptV2Server(SERVER_KEY).unwrap_client_reset(bytes(bad), 0.0)


def test_early_negotiation_tlvs() -> None:
    unknown = bytes.fromhex("7777 0003 aabbcc")
    assert parse_early_negotiation(b"") == EarlyNegotiation()
    assert parse_early_negotiation(unknown + bytes.fromhex("0001 0002 0001")).resend_wkc
    assert not parse_early_negotiation(bytes.fromhex("0001 0002 0002")).resend_wkc
    assert build_early_negotiation(EarlyNegotiation()) == b""
    for bad in ("0001", "0001 0003 000100", "0001 0002 00", "7777 0009 00"):
        with pytest.raises(ParseError):
            parse_early_negotiation(bytes.fromhex(bad))


@given(st.binary(max_size=400))
def test_random_bytes_give_only_protocol_errors(data: bytes) -> None:
    server = TLSCryptV2Server(SERVER_KEY)
    for parse in (
        lambda d: server.unwrap_client_reset(d, 0.0),
        lambda d: server.unwrap_client_reset(b"\x50" + d, 0.0),
        server.unwrap_client_key,
        parse_early_negotiation,
    ):
        with contextlib.suppress(ProtocolError):
            parse(data)


@given(st.data())
def test_truncated_resets_give_only_protocol_errors(data: st.DataObject) -> None:
    wire = TLSCryptV2Client(CLIENT_KEY).wrap(RESET_V3, 0.0)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(ProtocolError):
        TLSCryptV2Server(SERVER_KEY).unwrap_client_reset(wire[:cut], 0.0)


@pytest.mark.openvpn
@needs_openvpn
def test_openvpn_generated_client_key_unwraps_with_openvpn_server_key(tmp_path: Path) -> None:
    run_openvpn(tmp_path, "--genkey", "tls-crypt-v2-server", "srv.key")
    meta = base64.b64encode(b"client-42").decode()
    run_openvpn(
        tmp_path, "--tls-crypt-v2", "srv.key", "--genkey", "tls-crypt-v2-client", "c.key", meta
    )
    server = TLSCryptV2Server(parse_tls_crypt_v2_server_key((tmp_path / "srv.key").read_text()))
    client_key = parse_tls_crypt_v2_client_key((tmp_path / "c.key").read_text())
    info = server.unwrap_client_key(client_key.wkc)
    assert info.key == client_key.key
    assert (info.metadata_type, info.metadata) == (METADATA_TYPE_USER, b"client-42")
    # And a full V3 reset made with that key gets through our server.
    wire = TLSCryptV2Client(client_key).wrap(RESET_V3, 0.0)
    assert server.unwrap_client_reset(wire, 0.0)[1] == RESET_V3


@pytest.mark.openvpn
@needs_openvpn
def test_openvpn_wraps_client_keys_for_our_server_key(tmp_path: Path) -> None:
    ours = TLSCryptV2ServerKey.generate()
    (tmp_path / "srv.key").write_text(format_tls_crypt_v2_server_key(ours))
    run_openvpn(tmp_path, "--tls-crypt-v2", "srv.key", "--genkey", "tls-crypt-v2-client", "c.key")
    client_key = parse_tls_crypt_v2_client_key((tmp_path / "c.key").read_text())
    info = TLSCryptV2Server(ours).unwrap_client_key(client_key.wkc)
    assert info.key == client_key.key and info.metadata_type == METADATA_TYPE_TIMESTAMP
