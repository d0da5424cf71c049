"""The epoch data format: wire layout, key windows, rotation, and replay across epochs.

The key-window tests replay OpenVPN's own (OpenVPN/openvpn at commit
3de926089fdebd79b9d25e80c31e45c1e044911d, tests/unit_tests/openvpn/test_crypto.c:
crypto_test_epoch_*, with E1 secrets {0x23, 0...} and {0x27, 0...}, AES-128-GCM) and
test_packet_id.c: test_packet_id_write_epoch; each test names its origin. The rest feed
bytes and a clock to two ends built from the same key2.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from xdp_ovpn.proto.constants import EPOCH_COUNTER_MAX, EPOCH_RENEG_THRESHOLD, PING_PAYLOAD
from xdp_ovpn.proto.epoch import (
    AES_GCM_USAGE_LIMIT,
    EpochDataChannel,
    pack_packet_id,
    unpack_packet_id,
    usage_limit,
)
from xdp_ovpn.proto.epochkeys import EpochKey, initial_epoch_keys
from xdp_ovpn.proto.errors import AuthError, KeyError_, ParseError, ReplayError

E1_SEND = EpochKey(1, bytes([0x23]) + bytes(31))
E1_RECV = EpochKey(1, bytes([0x27]) + bytes(31))
KEY2 = bytes((i * 7 + 3) & 0xFF for i in range(256))
PEER_ID = 0x0A0B0C


def openvpn_fixture(future_keys: int, epoch: int = 1) -> EpochDataChannel:
    """crypto_test_epoch_setup: both directions at `epoch`, AES-128-GCM."""
    send = EpochKey(epoch, E1_SEND.secret)
    recv = EpochKey(epoch, E1_RECV.secret)
    return EpochDataChannel(0, 0, "AES-128-GCM", send, recv, future_keys=future_keys)


def pair(cipher: str = "AES-256-GCM", **kw) -> tuple[EpochDataChannel, EpochDataChannel]:
    """A client and a server slot from the same key2, as both ends derive them."""
    client = EpochDataChannel.from_key2(1, PEER_ID, cipher, KEY2, is_server=False, **kw)
    server = EpochDataChannel.from_key2(1, PEER_ID, cipher, KEY2, is_server=True, **kw)
    return client, server


# ---------------------------------------------------------------- wire format


def test_packet_id_layout():
    """test_packet_id_write_epoch: 16-bit epoch, 48-bit counter, big-endian."""
    assert pack_packet_id(0x23, 1) == bytes.fromhex("0023000000000001")
    assert pack_packet_id(0xFFFE, 0xFA079AB9D2E9) == bytes.fromhex("fffefa079ab9d2e9")
    assert pack_packet_id(0xF00F, 0xFFFFFFFFFFFF) == bytes.fromhex("f00fffffffffffff")
    assert unpack_packet_id(bytes.fromhex("fffefa079ab9d2e9")) == (0xFFFE, 0xFA079AB9D2E9)
    with pytest.raises(ValueError):
        pack_packet_id(1, 1 << 48)


@pytest.mark.parametrize("cipher", ["AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"])
def test_round_trip(cipher):
    client, server = pair(cipher)
    for size in (1, 100, 1400):
        data = bytes(range(256)) * 6
        assert server.decrypt(client.encrypt(data[:size], 0.0), 0.0) == data[:size]
        assert client.decrypt(server.encrypt(data[:size], 0.0), 0.0) == data[:size]
    assert client.overhead == 28


def test_wire_layout_tag_after_ciphertext_and_iv_xor():
    """Rebuild a packet from the spec with a plain AESGCM: header, AAD, nonce, tag place."""
    client, _ = pair("AES-256-GCM")
    packet = client.encrypt(PING_PAYLOAD, 0.0)
    assert packet[:4] == bytes([9 << 3 | 1]) + PEER_ID.to_bytes(3, "big")
    assert packet[4:12] == pack_packet_id(1, 1)
    data_key = initial_epoch_keys(KEY2, is_server=False)[0].data_key("AES-256-GCM")
    nonce = bytes(a ^ b for a, b in zip(packet[4:12] + bytes(4), data_key.implicit_iv, strict=True))
    sealed = AESGCM(data_key.key).encrypt(nonce, PING_PAYLOAD, packet[:12])
    assert packet[12:] == sealed  # ciphertext, then the 16-byte tag


def test_decrypt_frame_in_place_needs_no_slack():
    client, server = pair()
    packet = client.encrypt(b"hello epoch", 0.0)
    frame = memoryview(bytearray(packet))
    n = server.decrypt_frame(frame, len(packet), 0.0)
    assert bytes(frame[12 : 12 + n]) == b"hello epoch"


def test_encrypt_frame_in_place():
    client, server = pair()
    frame = memoryview(bytearray(12 + 5 + 16))
    frame[12:17] = b"abcde"
    length = client.encrypt_frame(frame, 5, 0.0)
    assert server.decrypt(bytes(frame[:length]), 0.0) == b"abcde"


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda p: p[:28], ParseError),  # no payload
        (lambda p: bytes([6 << 3 | 1]) + p[1:], ParseError),  # DATA_V1
        (lambda p: bytes([9 << 3 | 2]) + p[1:], KeyError_),  # another key-id
        (lambda p: p[:4] + bytes(2) + p[6:], ParseError),  # epoch 0
        (lambda p: p[:4] + b"\x00\x07" + p[6:], KeyError_),  # beyond the future keys
        (lambda p: p[:-1] + bytes([p[-1] ^ 1]), AuthError),  # tag
        (lambda p: p[:6] + bytes([p[6] ^ 1]) + p[7:], AuthError),  # counter is in the AAD
    ],
)
def test_bad_packets_are_counted_drops(mangle, error):
    client, server = pair()
    with pytest.raises(error):
        server.decrypt(mangle(client.encrypt(b"payload", 0.0)), 0.0)
    assert server.rx_packets == 0 and server.receive_epoch == 1
    assert server.rx_malformed + server.rx_auth_failed + server.rx_unknown_epoch == 1


# ---------------------------------------------------------------- OpenVPN's key-window tests


def test_future_key_generation():
    """crypto_test_epoch_key_generation (16 future keys)."""
    co = openvpn_fixture(16)
    assert co.future_epochs == tuple(range(2, 18))
    assert co.send_epoch == 1 and co.highest_derived_epoch == 17
    co.move_receive_to(8)
    assert co.future_epochs == tuple(range(9, 25))


def test_key_rotation():
    """crypto_test_epoch_key_rotation (13 future keys)."""
    co = openvpn_fixture(13)
    co.move_receive_to(9)  # moves the send key along
    assert (co.receive_epoch, co.send_epoch, co.retiring_epoch) == (9, 9, 1)
    for _ in range(4):
        co.rotate_send()
    assert co.send_epoch == 13
    co.move_receive_to(10)
    assert (co.receive_epoch, co.send_epoch, co.retiring_epoch) == (10, 13, 9)
    co.move_receive_to(12)
    assert (co.receive_epoch, co.send_epoch, co.retiring_epoch) == (12, 13, 10)
    co.rotate_send()
    assert co.send_epoch == 14


def test_receive_key_lookup():
    """crypto_test_epoch_key_receive_lookup (13 future keys)."""
    co = openvpn_fixture(13)
    look = co.decrypt_key_epoch
    assert look(2000) is None and look(0xEFFF) is None and look(0) is None
    assert co.retiring_epoch is None
    assert [look(e) for e in (1, 2, 13, 14, 15)] == [1, 2, 13, 14, None]
    co.move_receive_to(7)  # 1 retires, 2-6 are skipped, 8-20 ahead
    assert look(1) == 1 and co.retiring_epoch == 1
    assert [look(e) for e in range(2, 7)] == [None] * 5
    assert [look(e) for e in (7, 8, 20, 21, 22)] == [7, 8, 20, None, None]
    co.move_receive_to(8)
    assert [look(e) for e in range(0, 7)] == [None] * 7
    assert co.retiring_epoch == 7
    assert [look(e) for e in (7, 8, 20, 21, 22, 23)] == [7, 8, 20, 21, None, None]


def test_end_of_the_epoch_chain():
    """crypto_test_epoch_key_overflow (32 future keys), starting the chains at 65500
    instead of patching the state as the C test does."""
    co = openvpn_fixture(32, epoch=65500)
    while co.receive_epoch < 0xFFFF - 40:
        co.move_receive_to(co.receive_epoch + 10)
    assert co.decrypt_key_epoch(0xFFFF - 34) == 0xFFFF - 34
    assert co.decrypt_key_epoch(0xFFFF - 33) == 0xFFFF - 33
    # Moving there could no longer keep 32 keys ahead within 16 bits.
    assert co.decrypt_key_epoch(0xFFFF - 32) is None
    assert co.decrypt_key_epoch(0xFFFF) is None
    co.move_receive_to(0xFFFF - 33)
    assert co.decrypt_key_epoch(0xFFFF - 33) == 0xFFFF - 33
    assert co.decrypt_key_epoch(0xFFFF - 32) is None


def test_every_future_step_is_reachable():
    """crypto_test_epoch_edge (13 future keys)."""
    co = openvpn_fixture(13)
    for step in range(1, 14):
        target = co.receive_epoch + step
        assert co.decrypt_key_epoch(target) == target
        co.move_receive_to(target)
        assert co.receive_epoch == target
    assert co.decrypt_key_epoch(co.receive_epoch + 14) is None


# ---------------------------------------------------------------- rotation


def test_aes_gcm_limit_and_none_for_chacha():
    """crypto_test_aead_limits"""
    assert usage_limit("AES-128-GCM") == AES_GCM_USAGE_LIMIT == (1 << 36) - 1
    assert usage_limit("CHACHA20-POLY1305") == 0


def test_sender_rotates_before_the_usage_limit_and_the_peer_follows():
    # A limit of 400 packets+blocks: a 1400-byte packet counts 1 + 89 blocks (12 bytes of
    # header and id included), so five fit in an epoch: 5 * 90 > 400 moves on.
    client, server = pair(limit=400)
    epochs = []
    for i in range(12):
        packet = client.encrypt(bytes(1400), float(i))
        epochs.append(unpack_packet_id(packet[4:12]))
        assert server.decrypt(packet, float(i)) == bytes(1400)
    assert [e for e, _ in epochs] == [1] * 5 + [2] * 5 + [3] * 2
    assert [c for _, c in epochs][:6] == [1, 2, 3, 4, 5, 1]  # the counter restarts
    assert client.tx_rotations == 2
    # The server took each new epoch as it arrived; its own send key followed.
    assert (server.receive_epoch, server.retiring_epoch, server.send_epoch) == (3, 2, 3)
    assert client.decrypt(server.encrypt(b"reply", 12.0), 12.0) == b"reply"
    assert client.receive_epoch == 3


def test_receiver_at_its_limit_asks_the_peer_to_rotate():
    """The receiving side's key wears out: it moves its own send key on, which moves the
    peer's receive key and with it the peer's send key."""
    client, server = pair(limit=400)
    for i in range(5):
        server.decrypt(client.encrypt(bytes(1400), float(i)), float(i))
    client.limit = 0  # the sender would carry on in epoch 1
    assert server.send_epoch == 1
    reply = server.encrypt(b"ack", 5.0)
    assert unpack_packet_id(reply[4:12])[0] == 2
    client.decrypt(reply, 5.0)
    assert client.send_epoch == 2
    assert server.decrypt(client.encrypt(b"more", 6.0), 6.0) == b"more"
    assert server.receive_epoch == 2


def test_chacha_rotates_only_when_the_counter_is_spent():
    client, _ = pair("CHACHA20-POLY1305")
    client._tx.blocks = 1 << 40  # far past any AES-GCM limit
    assert unpack_packet_id(client.encrypt(b"x", 0.0)[4:12]) == (1, 1)
    client._tx.counter = EPOCH_COUNTER_MAX - 1
    assert unpack_packet_id(client.encrypt(b"x", 0.0)[4:12]) == (1, EPOCH_COUNTER_MAX)
    assert unpack_packet_id(client.encrypt(b"x", 0.0)[4:12]) == (2, 1)


def test_renegotiation_wanted_near_the_end_of_the_chain():
    early = EpochDataChannel(0, 0, "AES-128-GCM", EpochKey(EPOCH_RENEG_THRESHOLD - 1,
                             E1_SEND.secret), E1_RECV)
    assert not early.needs_renegotiation
    early.rotate_send()
    assert early.needs_renegotiation


def test_last_epoch_cannot_rotate():
    co = EpochDataChannel(0, 0, "AES-128-GCM", EpochKey(0xFFFF, E1_SEND.secret), E1_RECV)
    with pytest.raises(KeyError_):
        co.rotate_send()
    co._tx.counter = EPOCH_COUNTER_MAX
    with pytest.raises(KeyError_):
        co.encrypt(b"x", 0.0)


# ---------------------------------------------------------------- replay across epochs


def test_late_packets_of_the_previous_epoch_get_in_once():
    client, server = pair()
    old = [client.encrypt(b"old %d" % i, 0.0) for i in range(5)]
    client.rotate_send()
    new = [client.encrypt(b"new %d" % i, 0.0) for i in range(3)]
    server.decrypt(old[0], 0.0)
    server.decrypt(new[1], 0.1)  # epoch 2 arrives first: 1 retires, 2 is current
    assert (server.retiring_epoch, server.receive_epoch) == (1, 2)
    assert server.decrypt(old[3], 0.2) == b"old 3"  # late, from the retiring epoch
    assert server.decrypt(new[0], 0.3) == b"new 0"  # reordered within epoch 2
    for replay in (old[3], old[0], new[1]):
        with pytest.raises(ReplayError):
            server.decrypt(replay, 0.4)
    assert server.rx_replayed == 3 and server.rx_packets == 4


def test_keys_two_epochs_back_are_gone():
    client, server = pair()
    first = client.encrypt(b"epoch 1", 0.0)
    client.rotate_send()
    second = client.encrypt(b"epoch 2", 0.0)
    client.rotate_send()
    server.decrypt(second, 0.0)
    server.decrypt(client.encrypt(b"epoch 3", 0.0), 0.0)
    assert (server.retiring_epoch, server.receive_epoch) == (2, 3)
    with pytest.raises(KeyError_):
        server.decrypt(first, 0.0)
    assert server.rx_unknown_epoch == 1


def test_the_retiring_window_keeps_its_time_limit():
    """openvpn's --replay-window n t applies to each epoch's window: a reordered packet of
    the retiring epoch older than t seconds behind its newer neighbours is dropped."""
    client, server = pair(replay_time=5)
    old = [client.encrypt(b"%d" % i, 0.0) for i in range(4)]
    client.rotate_send()
    server.decrypt(old[3], 0.0)
    server.decrypt(client.encrypt(b"new", 1.0), 1.0)
    assert server.decrypt(old[1], 2.0) == b"1"  # within 5 s
    with pytest.raises(ReplayError):
        server.decrypt(old[2], 9.0)  # 9 s after id 3 arrived


def test_a_forged_future_epoch_moves_nothing():
    client, server = pair()
    client.rotate_send()
    forged = bytearray(client.encrypt(b"x" * 40, 0.0))
    forged[20] ^= 0xFF
    with pytest.raises(AuthError):
        server.decrypt(bytes(forged), 0.0)
    assert (server.receive_epoch, server.retiring_epoch, server.send_epoch) == (1, None, 1)


def test_a_peer_may_skip_epochs_within_the_future_keys():
    client, server = pair()
    for _ in range(3):
        client.rotate_send()
    assert server.decrypt(client.encrypt(b"skip", 0.0), 0.0) == b"skip"
    assert (server.receive_epoch, server.retiring_epoch) == (4, 1)
    assert server.future_epochs == (5, 6, 7, 8)


# ---------------------------------------------------------------- the data plane's calls


@pytest.mark.parametrize("cipher", ["AES-128-GCM", "CHACHA20-POLY1305"])
def test_seal_run_equals_packets_sealed_one_by_one(cipher):
    """A GSO run sealed in place: the same bytes as encrypt() packet by packet, and the
    tag of each packet ends where the next one starts."""
    sizes = [100, 100, 100, 37]
    payloads = [bytes([i + 1]) * n for i, n in enumerate(sizes)]
    client, server = pair(cipher)
    one_by_one, _ = pair(cipher)
    stride = 28 + sizes[0]
    buf = bytearray(stride * 3 + 28 + sizes[-1])
    for i, payload in enumerate(payloads):
        buf[i * stride + 12 : i * stride + 12 + len(payload)] = payload
    client.seal_run(memoryview(buf), stride, 4, sizes[-1], 1.0)
    packets = [bytes(buf[i * stride : i * stride + 28 + n]) for i, n in enumerate(sizes)]
    assert packets == [one_by_one.encrypt(p, 1.0) for p in payloads]
    assert [server.decrypt(p, 1.0) for p in packets] == payloads
    assert client.tx_packets == 4 and client.tx_bytes == sum(sizes)
    with pytest.raises(ValueError):  # no room for the last tag
        client.seal_run(memoryview(buf)[:-1], stride, 4, sizes[-1], 1.0)


def test_seal_run_rotates_inside_a_run():
    client, server = pair(limit=3)
    buf = bytearray(4 * 29)
    for i in range(4):
        buf[i * 29 + 12] = i + 1
    client.seal_run(memoryview(buf), 29, 4, 1, 1.0)
    epochs = [unpack_packet_id(buf[i * 29 + 4 : i * 29 + 12])[0] for i in range(4)]
    assert epochs[0] == 1 and epochs[-1] > 1
    assert [server.decrypt(bytes(buf[i * 29 : i * 29 + 29]), 1.0) for i in range(4)] == [
        bytes([i + 1]) for i in range(4)]


def test_epoch_changes_are_reported_and_advance_skips_ahead():
    client, server = pair()
    seen: list[tuple[int, int]] = []
    client.on_epochs = lambda send, receive: seen.append((send, receive))
    server.on_epochs = lambda send, receive: seen.append((-send, -receive))
    client.rotate_send()
    client.advance_send(5)
    client.advance_send(3)  # never back
    assert seen == [(2, 1), (5, 1)] and client.send_epoch == 5
    assert server.decrypt(client.encrypt(b"x", 1.0), 1.0) == b"x"  # 5 is a future key
    assert seen[2:] == [(-5, -1), (-5, -5)]  # the server's send key followed, then receive
    assert server.receive_epoch == 5 and server.send_epoch == 5


@pytest.mark.parametrize("epoch", [3, 9])  # among the future keys; beyond them
def test_advance_receive_resumes_where_the_peer_is(epoch):
    client, server = pair()
    client.advance_send(epoch)
    packet = client.encrypt(b"x", 1.0)
    server.advance_receive(epoch)
    server.advance_receive(1)  # never back
    assert server.receive_epoch == epoch and server.retiring_epoch is None
    assert server.future_epochs == tuple(range(epoch + 1, epoch + 5))
    assert server.decrypt(packet, 1.0) == b"x"
    assert server.send_epoch == 1  # the receive side alone moved
