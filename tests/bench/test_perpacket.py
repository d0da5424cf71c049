"""`xdp-ovpn bench --per-packet` times the real loops: every packet it feeds the receive
loop is decrypted and delivered, and what the send loop hands the socket decrypts at a
peer into the packets it read. No root; the figures themselves are never asserted."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from xdp_ovpn.bench import perpacket
from xdp_ovpn.cli import main
from xdp_ovpn.proto.datachannel import DataChannelCrypto

ROUNDS = 3
SEGMENT = 52 + perpacket.TCP_PAYLOAD  # IPv4 + TCP with timestamps + payload


@pytest.mark.parametrize("cipher", perpacket.NATIVE_CIPHERS)
def test_receive_loop_decrypts_and_delivers_every_packet_of_every_batch(cipher: str) -> None:
    cost, peer = perpacket.receive_cost(ROUNDS, cipher)
    stats = peer.stats
    assert cost > 0
    assert stats.drops == {}
    assert stats.link_rx_packets == stats.rx_packets == ROUNDS * perpacket.BATCH
    assert stats.rx_bytes == ROUNDS * perpacket.BATCH * SEGMENT


@pytest.mark.parametrize("cipher", perpacket.NATIVE_CIPHERS)
def test_send_loop_output_decrypts_into_the_packets_it_read(cipher: str) -> None:
    cost, sock, sender = perpacket.send_cost(ROUNDS, cipher)
    assert cost > 0
    # 64 packets of 1524 bytes on the wire do not fit one 65,000-byte GSO send: two a round.
    assert sock.calls == 2 * ROUNDS
    key = perpacket._key(cipher)
    receiver = DataChannelCrypto(0, sender.peer_id, key, key)
    run = sock.last
    datagrams = [run[at : at + sock.segment] for at in range(0, len(run), sock.segment)]
    assert len(datagrams) == perpacket.BATCH - 65_000 // (SEGMENT + 24)
    for datagram in datagrams:
        plain = receiver.decrypt(datagram, 0.0)
        assert len(plain) == SEGMENT and plain[:1] == b"\x45"
    assert receiver.rx_packets == len(datagrams)


def test_floors_and_cli_report() -> None:
    assert perpacket.send_floor(ROUNDS) > 0
    assert min(perpacket.aead_cost(ROUNDS)) > 0
    result = CliRunner().invoke(main, ["bench", "--per-packet"])
    assert result.exit_code == 0, result.output
    for label in ("receive", "send", "send floor", "AEAD call alone"):
        assert label in result.output


def test_native_loops_deliver_and_seal_every_packet() -> None:
    pytest.importorskip("xdp_ovpn._native")
    for cipher in perpacket.NATIVE_CIPHERS:
        cost, stats = perpacket.native_receive_cost(cipher, ROUNDS)
        assert cost > 0 and stats.drops == {}
        assert stats.link_rx_packets == stats.rx_packets == ROUNDS * perpacket.BATCH
        cost, engine, key = perpacket.native_send_cost(cipher, ROUNDS)
        try:
            run, segment = engine._c.bench_last()
            assert segment == SEGMENT + 24 and len(run) % segment == 0
            receiver = DataChannelCrypto(0, perpacket._PEER_ID, key, key)
            for at in range(0, len(run), segment):
                assert receiver.decrypt(run[at : at + segment], 0.0)[:1] == b"\x45"
            stats = engine.peer_stats(perpacket._PEER_ID)
            assert stats.tx_packets == ROUNDS * perpacket.BATCH and stats.drops == {}
        finally:
            engine.close()
