"""AEAD DATA_V2: known answers built from the spec, round trips, replay, keepalive/OCC, fuzzing."""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given
from hypothesis import strategies as st

from xdp_ovpn.proto.constants import (
    AEAD_CIPHERS,
    OCC_EXIT_PAYLOAD,
    PACKET_ID_MAX,
    PACKET_ID_RENEG_THRESHOLD,
    PING_PAYLOAD,
)
from xdp_ovpn.proto.datachannel import (
    FRAME_SLACK,
    DataChannelCrypto,
    DataKey,
    is_occ_exit,
    is_ping,
)
from xdp_ovpn.proto.errors import AuthError, KeyError_, ParseError, ProtocolError, ReplayError
from xdp_ovpn.proto.keys import split_key2

CIPHERS = sorted(AEAD_CIPHERS)
KEY2 = bytes((i * 7 + 3) & 0xFF for i in range(256))


def pair(cipher: str = "AES-256-GCM", key_id: int = 2, peer_id: int = 0x0A0B0C, **kw):
    """A client and a server slot from the same key2, as both ends derive them."""
    c = split_key2(KEY2, cipher, is_server=False)
    s = split_key2(KEY2, cipher, is_server=True)
    client = DataChannelCrypto(
        key_id,
        peer_id,
        DataKey(cipher, c.encrypt_key, c.encrypt_nonce_tail),
        DataKey(cipher, c.decrypt_key, c.decrypt_nonce_tail),
        **kw,
    )
    server = DataChannelCrypto(
        key_id,
        peer_id,
        DataKey(cipher, s.encrypt_key, s.encrypt_nonce_tail),
        DataKey(cipher, s.decrypt_key, s.decrypt_nonce_tail),
        **kw,
    )
    return client, server


def spec_packet(
    cipher: str, key: bytes, tail: bytes, key_id: int, peer_id: int, pid: int, plaintext: bytes
) -> bytes:
    """DATA_V2 built straight from the wire description, with cryptography's AEAD classes:
    [0x48|kid][peer-id 3 BE][pid 4 BE][tag 16][ciphertext], AAD = first 8 bytes,
    nonce = pid (4 BE) + tail (first 8 bytes of the direction's hmac half)."""
    header = bytes([9 << 3 | key_id]) + peer_id.to_bytes(3, "big") + pid.to_bytes(4, "big")
    nonce = pid.to_bytes(4, "big") + tail
    aead = ChaCha20Poly1305(key) if cipher.startswith("CHACHA") else AESGCM(key)
    sealed = aead.encrypt(nonce, plaintext, header)
    return header + sealed[-16:] + sealed[:-16]


@pytest.mark.parametrize("cipher", CIPHERS)
def test_known_answer_from_spec(cipher: str) -> None:
    client, server = pair(cipher)
    klen = AEAD_CIPHERS[cipher]
    # keys[0] (client to server): cipher key = key2[0:klen], nonce tail = key2[64:72].
    c2s_key, c2s_tail = KEY2[:klen], KEY2[64:72]
    s2c_key, s2c_tail = KEY2[128 : 128 + klen], KEY2[192:200]
    payload = b"\x45\x00" + bytes(range(200))
    for pid in (1, 2):
        expected = spec_packet(cipher, c2s_key, c2s_tail, 2, 0x0A0B0C, pid, payload)
        assert client.encrypt(payload, 0.0) == expected
        assert server.decrypt(expected, 0.0) == payload
    reply = spec_packet(cipher, s2c_key, s2c_tail, 2, 0x0A0B0C, 1, payload)
    assert server.encrypt(payload, 0.0) == reply
    assert client.decrypt(reply, 0.0) == payload


def test_header_layout_and_tag_position() -> None:
    client, _ = pair(key_id=5, peer_id=0x123456)
    pkt = client.encrypt(b"x" * 40, 0.0)
    assert pkt[:8] == bytes.fromhex("4d12345600000001")
    assert len(pkt) == 8 + 16 + 40
    c = split_key2(KEY2, "AES-256-GCM", False)
    sealed = AESGCM(c.encrypt_key).encrypt(b"\0\0\0\1" + c.encrypt_nonce_tail, b"x" * 40, pkt[:8])
    assert pkt[8:24] == sealed[-16:]  # the tag comes BEFORE the ciphertext
    assert pkt[24:] == sealed[:-16]


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("size", [1, 15, 16, 17, 1400, 9000])
def test_round_trip_every_entry_point(cipher: str, size: int) -> None:
    client, server = pair(cipher)
    payload = bytes(i & 0xFF for i in range(size))
    # encrypt_into without slack (scratch path) and with slack (direct path).
    exact = bytearray(24 + size)
    n = client.encrypt_into(exact, payload, 0.0)
    roomy = bytearray(24 + size + FRAME_SLACK + 5)
    m = client.encrypt_into(memoryview(roomy), payload, 0.0)
    assert n == m == 24 + size
    out = bytearray(size)
    assert server.decrypt_into(out, bytes(exact), 0.0) == size and out == payload
    assert server.decrypt_into(memoryview(out), memoryview(roomy)[:m], 0.0) == size
    assert out == payload
    # In place in frames, both directions.
    frame = memoryview(bytearray(24 + size + FRAME_SLACK))
    frame[24 : 24 + size] = payload
    length = server.encrypt_frame(frame, size, 0.0)
    assert client.decrypt_frame(frame, length, 0.0) == size
    assert frame[24 : 24 + size] == payload
    assert server.tx_packets == 1 and client.rx_packets == 1 and client.rx_bytes == size


def test_frame_path_interoperates_with_buffer_path() -> None:
    client, server = pair()
    frame = memoryview(bytearray(2048))
    pkt = client.encrypt(b"hello", 0.0)
    frame[: len(pkt)] = pkt
    assert server.decrypt_frame(frame, len(pkt), 0.0) == 5
    assert bytes(frame[24:29]) == b"hello"


def test_replayed_packet_rejected_counted_and_later_packets_pass() -> None:
    client, server = pair()
    p1, p2, p3 = (client.encrypt(b"p%d" % i, 0.0) for i in range(3))
    assert server.decrypt(p1, 0.0) == b"p0"
    assert server.decrypt(p2, 0.0) == b"p1"
    with pytest.raises(ReplayError):
        server.decrypt(p1, 0.0)
    assert server.rx_replayed == 1 and server.replay.replayed == 1
    assert server.decrypt(p3, 0.0) == b"p2"
    assert server.rx_packets == 3


def test_reordered_within_window_passes_beyond_window_fails() -> None:
    client, server = pair(replay_window=4)
    pkts = [client.encrypt(b"%d" % i, 0.0) for i in range(1, 11)]  # ids 1..10
    assert server.decrypt(pkts[9], 0.0) == b"10"
    assert server.decrypt(pkts[6], 0.0) == b"7"  # 3 below the highest
    with pytest.raises(ReplayError):
        server.decrypt(pkts[5], 0.0)  # 4 below: outside a window of 4
    assert server.replay.too_old == 1
    assert server.decrypt(pkts[8], 0.0) == b"9"


def test_too_old_in_time_rejected() -> None:
    client, server = pair(replay_time=15)
    p1, p2, p3, p4 = (client.encrypt(b"x", 0.0) for _ in range(4))
    server.decrypt(p1, 0.0)
    server.decrypt(p3, 0.0)  # p2 delayed
    server.decrypt(p4, 1.0)
    with pytest.raises(ReplayError):
        server.decrypt(p2, 30.0)
    assert server.replay.expired == 1 and server.replay.highest == 4
    assert server.decrypt(client.encrypt(b"later", 30.0), 30.0) == b"later"


@pytest.mark.parametrize("where", [0, 3, 5, 8, 23, 24, -1])
def test_tampered_packet_rejected_without_touching_state(where: int) -> None:
    client, server = pair()
    good = client.encrypt(b"payload" * 10, 0.0)
    bad = bytearray(good)
    bad[where] ^= 0x01
    expected = KeyError_ if where == 0 else AuthError  # byte 0 flips the key-id bit
    with pytest.raises(expected):
        server.decrypt(bytes(bad), 0.0)
    assert server.replay.highest == 0 and server.rx_packets == 0
    assert server.decrypt(good, 0.0) == b"payload" * 10  # same packet-id still accepted


def test_tampered_frame_rejected_without_touching_state() -> None:
    client, server = pair()
    good = client.encrypt(b"abc" * 100, 0.0)
    frame = memoryview(bytearray(2048))
    frame[: len(good)] = good
    frame[100] ^= 0x80
    with pytest.raises(AuthError):
        server.decrypt_frame(frame, len(good), 0.0)
    assert server.rx_auth_failed == 1 and server.replay.highest == 0
    frame[: len(good)] = good
    assert server.decrypt_frame(frame, len(good), 0.0) == 300


def test_wrong_key_is_auth_failure() -> None:
    client, _ = pair("AES-128-GCM")
    other, _ = pair("AES-256-GCM")
    with pytest.raises(AuthError):
        other.decrypt(client.encrypt(b"x", 0.0), 0.0)  # also wrong direction


def test_header_errors() -> None:
    client, server = pair(key_id=2)
    pkt = bytearray(client.encrypt(b"data", 0.0))
    with pytest.raises(ParseError, match="short"):
        server.decrypt(bytes(pkt[:24]), 0.0)
    pkt[0] = 4 << 3 | 2  # CONTROL_V1
    with pytest.raises(ParseError, match="DATA_V2"):
        server.decrypt(bytes(pkt), 0.0)
    pkt[0] = 9 << 3 | 3
    with pytest.raises(KeyError_, match="key-id 3"):
        server.decrypt(bytes(pkt), 0.0)
    assert server.rx_malformed == 3


def test_output_too_small() -> None:
    client, server = pair()
    with pytest.raises(ValueError):
        client.encrypt_into(bytearray(30), b"x" * 10, 0.0)
    with pytest.raises(ParseError):
        server.decrypt_into(bytearray(3), client.encrypt(b"x" * 10, 0.0), 0.0)
    with pytest.raises(ValueError):
        client.encrypt_frame(memoryview(bytearray(40)), 10, 0.0)  # no FRAME_SLACK


def test_packet_ids_count_up_and_exhaustion_signals_renegotiation() -> None:
    client, server = pair()
    assert [client.encrypt(b"x", 0.0)[4:8] for _ in range(2)] == [b"\0\0\0\1", b"\0\0\0\2"]
    assert not client.needs_renegotiation
    client.sender.last = PACKET_ID_RENEG_THRESHOLD - 1
    pkt = client.encrypt(b"x", 0.0)
    assert struct.unpack("!I", pkt[4:8])[0] == PACKET_ID_RENEG_THRESHOLD
    assert client.needs_renegotiation
    assert server.decrypt(pkt, 0.0) == b"x"
    client.sender.last = PACKET_ID_MAX - 1
    client.encrypt(b"x", 0.0)
    with pytest.raises(KeyError_):
        client.encrypt(b"x", 0.0)


def test_ping_and_occ_exit_recognised_after_decrypt() -> None:
    client, server = pair()
    assert is_ping(server.decrypt(client.encrypt(PING_PAYLOAD, 0.0), 0.0))
    assert server.is_occ_exit(server.decrypt(client.encrypt(OCC_EXIT_PAYLOAD, 0.0), 0.0))
    assert is_ping(memoryview(bytearray(PING_PAYLOAD)))
    assert not is_ping(PING_PAYLOAD + b"\0")
    assert not is_ping(PING_PAYLOAD[:-1] + b"\0")
    assert not is_occ_exit(OCC_EXIT_PAYLOAD[:-1] + b"\x07")  # another OCC opcode
    assert not is_occ_exit(b"\x45" * 20)


def test_bad_keys_rejected() -> None:
    with pytest.raises(KeyError_):
        DataKey("BF-CBC", b"k" * 16, b"t" * 8)
    with pytest.raises(ValueError):
        DataKey("AES-128-GCM", b"k" * 32, b"t" * 8)
    with pytest.raises(ValueError):
        DataKey("AES-128-GCM", b"k" * 16, b"t" * 4)


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_errors(data: bytes) -> None:
    _, server = pair()
    try:
        server.decrypt(data, 0.0)
    except ProtocolError:
        pass
    else:  # pragma: no cover - a forgery would be a real bug
        pytest.fail("random bytes authenticated")


@given(st.binary(max_size=100), st.integers(min_value=0, max_value=7))
def test_random_body_behind_valid_header_only_raises_protocol_errors(body: bytes, kid: int) -> None:
    _, server = pair()
    frame = memoryview(bytearray(len(body) + 8 + FRAME_SLACK))
    frame[:8] = bytes([9 << 3 | kid, 0x0A, 0x0B, 0x0C, 0, 0, 0, 1])
    frame[8 : 8 + len(body)] = body
    with pytest.raises(ProtocolError):
        server.decrypt_frame(frame, 8 + len(body), 0.0)


@given(st.integers(min_value=0, max_value=83))
def test_truncated_packets_only_raise_protocol_errors(cut: int) -> None:
    client, server = pair()
    pkt = client.encrypt(b"z" * 60, 0.0)
    with pytest.raises(ProtocolError):
        server.decrypt(pkt[:cut], 0.0)
    assert server.replay.highest == 0


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("last", [1, 700, 1400])
def test_seal_run_equals_packet_by_packet(cipher: str, last: int) -> None:
    """A GSO run sealed in place: each segment is the packet encrypt() makes for that id."""
    client, server = pair(cipher)
    reference, _ = pair(cipher)
    stride, count = 24 + 1400, 5
    buf = memoryview(bytearray(count * stride + FRAME_SLACK))
    payloads = [bytes([i]) * (1400 if i < count - 1 else last) for i in range(count)]
    for i, p in enumerate(payloads):
        buf[i * stride + 24 : i * stride + 24 + len(p)] = p
    client.seal_run(buf, stride, count, last, 0.0)
    for i, p in enumerate(payloads):
        packet = bytes(buf[i * stride : i * stride + 24 + len(p)])
        assert packet == reference.encrypt(p, 0.0)
        assert server.decrypt(packet, 0.0) == p
    assert client.tx_packets == count and client.tx_bytes == sum(map(len, payloads))
    assert client.sender.last == count


def test_seal_run_refuses_what_does_not_fit_and_exhausted_ids() -> None:
    client, _ = pair()
    with pytest.raises(ValueError):
        client.seal_run(memoryview(bytearray(2 * 124)), 124, 2, 100, 0.0)  # no FRAME_SLACK
    with pytest.raises(ValueError):
        client.seal_run(memoryview(bytearray(1000)), 124, 2, 101, 0.0)  # last > stride - 24
    client.sender.last = PACKET_ID_MAX - 1
    with pytest.raises(KeyError_):
        client.seal_run(memoryview(bytearray(1000)), 124, 2, 100, 0.0)
    assert client.sender.last == PACKET_ID_MAX - 1  # nothing taken
