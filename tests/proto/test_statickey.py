"""Key files: OpenVPN static keys and tls-crypt-v2 PEM keys, against openvpn's own output."""

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openvpn_vectors import (
    PKT_STATIC_KEY,
    TLS_CRYPT_V2_CLIENT_KEY,
    TLS_CRYPT_V2_SERVER_KEY,
    needs_openvpn,
    run_openvpn,
)

from xdp_ovpn.proto.errors import ParseError, ProtocolError
from xdp_ovpn.proto.statickey import (
    StaticKey,
    TLSCryptV2ClientKey,
    TLSCryptV2ServerKey,
    format_static_key,
    format_tls_crypt_v2_client_key,
    format_tls_crypt_v2_server_key,
    parse_static_key,
    parse_tls_crypt_v2_client_key,
    parse_tls_crypt_v2_server_key,
    pem_encode,
)


def test_static_key_from_openvpn_unit_tests() -> None:
    key = parse_static_key(PKT_STATIC_KEY)
    assert key.cipher(0)[:4] == bytes.fromhex("37268ea8")
    assert key.hmac(0)[:4] == bytes.fromhex("de63ebc6")  # byte 64: keys[0].hmac
    assert key.cipher(1)[:4] == bytes.fromhex("a0c1c489")  # byte 128: keys[1].cipher
    assert key.hmac(1)[-4:] == bytes.fromhex("eeb8b9e6")


def test_static_key_round_trip_matches_genkey_layout() -> None:
    key = StaticKey(bytes(range(256)))
    text = format_static_key(key)
    assert text.startswith("#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1")
    assert text.splitlines()[4] == bytes(range(16)).hex()
    assert parse_static_key(text) == key


def test_static_key_tolerates_inline_block_and_spaces() -> None:
    text = "<tls-auth>\n" + PKT_STATIC_KEY.replace("37268ea8", "3726 8ea8 ") + "</tls-auth>\n"
    assert parse_static_key(text) == parse_static_key(PKT_STATIC_KEY)


@pytest.mark.parametrize(
    "text",
    [
        "",
        PKT_STATIC_KEY.replace("-----BEGIN", "-----BOGUS"),
        PKT_STATIC_KEY.replace("-----END", "-----FIN"),
        PKT_STATIC_KEY.replace("37268ea8", "37268eaz"),
        PKT_STATIC_KEY.replace("2b4126b999005ade802797b0eeb8b9e6\n", ""),
    ],
)
def test_bad_static_keys_are_parse_errors(text: str) -> None:
    with pytest.raises(ParseError):
        parse_static_key(text)


def test_tls_crypt_v2_keys_from_openvpn_unit_tests() -> None:
    server = parse_tls_crypt_v2_server_key(TLS_CRYPT_V2_SERVER_KEY)
    assert server.data == bytes(range(128))
    assert format_tls_crypt_v2_server_key(server) == TLS_CRYPT_V2_SERVER_KEY
    client = parse_tls_crypt_v2_client_key(TLS_CRYPT_V2_CLIENT_KEY)
    assert client.key.data == bytes(range(256))
    assert format_tls_crypt_v2_client_key(client) == TLS_CRYPT_V2_CLIENT_KEY


def test_pem_name_must_match() -> None:
    with pytest.raises(ParseError):
        parse_tls_crypt_v2_server_key(TLS_CRYPT_V2_CLIENT_KEY)
    with pytest.raises(ParseError):
        parse_tls_crypt_v2_client_key(TLS_CRYPT_V2_SERVER_KEY)


@pytest.mark.parametrize(
    "data",
    [
        bytes(256),  # no WKc at all
        bytes(256) + bytes(40),  # WKc length field says 0
        bytes(256) + bytes(38) + (41).to_bytes(2, "big"),  # says 41, is 40
    ],
)
def test_client_key_with_bad_wkc_rejected(data: bytes) -> None:
    with pytest.raises(ParseError):
        parse_tls_crypt_v2_client_key(pem_encode(data, "OpenVPN tls-crypt-v2 client key"))


def test_server_key_wrong_size_and_bad_base64_rejected() -> None:
    with pytest.raises(ParseError):
        parse_tls_crypt_v2_server_key(pem_encode(bytes(127), "OpenVPN tls-crypt-v2 server key"))
    with pytest.raises(ParseError):
        parse_tls_crypt_v2_server_key(TLS_CRYPT_V2_SERVER_KEY.replace("AAEC", "A*EC"))


def test_keys_do_not_show_in_repr() -> None:
    key = StaticKey(bytes(range(256)))
    assert "0102" not in repr(key)
    assert "bytes" in repr(TLSCryptV2ServerKey(bytes(128)))
    assert "wkc" in repr(TLSCryptV2ClientKey(key, bytes(38) + (40).to_bytes(2, "big")))


@given(st.text(max_size=400))
def test_random_text_gives_only_parse_errors(text: str) -> None:
    for parser in (
        parse_static_key,
        parse_tls_crypt_v2_server_key,
        parse_tls_crypt_v2_client_key,
    ):
        with contextlib.suppress(ProtocolError):
            parser(text)


@given(st.data())
def test_truncated_key_files_give_only_parse_errors(data: st.DataObject) -> None:
    text = data.draw(st.sampled_from([PKT_STATIC_KEY, TLS_CRYPT_V2_CLIENT_KEY]))
    cut = data.draw(st.integers(0, len(text)))
    for parser in (parse_static_key, parse_tls_crypt_v2_client_key):
        with contextlib.suppress(ProtocolError):
            parser(text[:cut])


@pytest.mark.openvpn
@needs_openvpn
def test_openvpn_genkey_output_parses_and_round_trips(tmp_path: Path) -> None:
    run_openvpn(tmp_path, "--genkey", "secret", "static.key")
    run_openvpn(tmp_path, "--genkey", "tls-crypt-v2-server", "srv.key")
    run_openvpn(tmp_path, "--tls-crypt-v2", "srv.key", "--genkey", "tls-crypt-v2-client", "cli.key")
    static = (tmp_path / "static.key").read_text()
    assert format_static_key(parse_static_key(static)) == static
    srv = (tmp_path / "srv.key").read_text()
    assert format_tls_crypt_v2_server_key(parse_tls_crypt_v2_server_key(srv)) == srv
    cli = (tmp_path / "cli.key").read_text()
    assert format_tls_crypt_v2_client_key(parse_tls_crypt_v2_client_key(cli)) == cli


@pytest.mark.openvpn
@needs_openvpn
def test_openvpn_loads_our_key_files(tmp_path: Path) -> None:
    (tmp_path / "static.key").write_text(format_static_key(StaticKey.generate()))
    run_openvpn(tmp_path, "--test-crypto", "--secret", "static.key", "--cipher", "AES-256-GCM")
    srv = format_tls_crypt_v2_server_key(TLSCryptV2ServerKey.generate())
    (tmp_path / "srv.key").write_text(srv)
    # openvpn wraps a client key with our server key and checks it unwraps again.
    run_openvpn(tmp_path, "--tls-crypt-v2", "srv.key", "--genkey", "tls-crypt-v2-client", "cli.key")
    parse_tls_crypt_v2_client_key((tmp_path / "cli.key").read_text())
