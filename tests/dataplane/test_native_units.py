"""The native engine's concepts one by one against their Python originals: the AEAD against
DataChannelCrypto (every cipher, both directions), the replay window against
pktid.ReplayWindow under generated id/time sequences, the iroute longest-prefix match
against PeerTable. No root."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdp_ovpn import _native
from xdp_ovpn.dataplane.engine import EngineConfig
from xdp_ovpn.dataplane.nativeengine import _CIPHERS, NativeEngine
from xdp_ovpn.dataplane.peers import Peer, PeerTable
from xdp_ovpn.proto.constants import AEAD_CIPHERS
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey
from xdp_ovpn.proto.pktid import ReplayWindow


def _keys(cipher: str, seed: int) -> tuple[DataKey, DataKey]:
    n = AEAD_CIPHERS[cipher]
    enc = bytes((seed + i) & 0xFF for i in range(n))
    dec = bytes((seed * 3 + i) & 0xFF for i in range(n))
    return (DataKey(cipher, enc, bytes(range(seed, seed + 8))),
            DataKey(cipher, dec, bytes(range(seed + 1, seed + 9))))


@pytest.mark.parametrize("cipher", sorted(AEAD_CIPHERS))
@given(payloads=st.lists(st.binary(min_size=1, max_size=1500), min_size=1, max_size=8),
       key_id=st.integers(0, 7), peer_id=st.integers(0, 0xFFFFFE), seed=st.integers(0, 200))
@settings(max_examples=25, deadline=None)
def test_aead_seals_and_opens_as_datachannel_crypto(cipher: str, payloads: list[bytes],
                                                    key_id: int, peer_id: int,
                                                    seed: int) -> None:
    enc, dec = _keys(cipher, seed)
    python = DataChannelCrypto(key_id, peer_id, enc, dec)
    code = _CIPHERS[cipher]
    for pid, payload in enumerate(payloads, start=1):
        sealed = python.encrypt(payload, 0.0)
        word = int.from_bytes(sealed[:4], "big")
        assert _native.seal(code, enc.key, enc.nonce_tail, word, pid, payload) == sealed
        assert _native.open(code, enc.key, enc.nonce_tail, sealed) == payload
        tampered = bytearray(sealed)
        tampered[-1] ^= 1
        assert _native.open(code, enc.key, enc.nonce_tail, bytes(tampered)) is None
        tampered = bytearray(sealed)
        tampered[5] ^= 1  # the packet-id is authenticated data and part of the nonce
        assert _native.open(code, enc.key, enc.nonce_tail, bytes(tampered)) is None
    # The other direction: what the peer seals with our decrypt key opens as Python opens it.
    peer = DataChannelCrypto(key_id, peer_id, dec, enc)
    sealed = peer.encrypt(payloads[0], 0.0)
    assert _native.open(code, dec.key, dec.nonce_tail, sealed) == python.decrypt(sealed, 0.0)


_ids = st.lists(st.tuples(st.integers(0, 300), st.floats(0, 4, allow_nan=False)),
                min_size=1, max_size=120)


@given(size=st.integers(1, 200), time_window=st.sampled_from([0, 1, 2.5, 15]), steps=_ids,
       start=st.sampled_from([0, 1000, 0xFFFFFF00]))
@settings(max_examples=200, deadline=None)
def test_replay_window_decides_and_counts_as_pktid(size: int, time_window: float,
                                                   steps: list[tuple[int, float]],
                                                   start: int) -> None:
    python = ReplayWindow(size, time_window)
    native = _native.ReplayWindow(size, float(time_window))
    now = 0.0
    for offset, dt in steps:
        now += dt
        pid = start + offset if offset else 0
        accepted = python.check(pid, now)
        assert native.check(pid, now) == accepted, (pid, now)
        if accepted:
            python.update(pid, now)
            native.update(pid, now)
        assert native.state() == (python.highest, python.invalid, python.replayed,
                                  python.too_old, python.expired)


@given(size=st.integers(1, 65536), jump=st.integers(1, 200000), back=st.integers(0, 70000))
@settings(max_examples=50, deadline=None)
def test_replay_window_large_windows_and_jumps(size: int, jump: int, back: int) -> None:
    python, native = ReplayWindow(size, 0), _native.ReplayWindow(size, 0.0)
    for pid in (5, 5 + jump, max(5 + jump - back, 0), max(5 + jump - back, 0), 5 + jump):
        accepted = python.check(pid, 0.0)
        assert native.check(pid, 0.0) == accepted
        if accepted:
            python.update(pid, 0.0)
            native.update(pid, 0.0)
    assert native.state()[0] == python.highest


def _network(version: int) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    return st.builds(
        lambda value, length: str(ipaddress.ip_network((value, length), strict=False)),
        st.integers(0, 2**bits - 1).map(lambda v: (v >> (bits - 16)) << (bits - 16))
        if version == 4 else st.integers(0, 2**bits - 1), st.integers(0, bits))


@given(routes=st.lists(st.lists(st.one_of(_network(4), _network(6)), max_size=4), min_size=1,
                       max_size=6),
       probes=st.lists(st.one_of(st.binary(min_size=4, max_size=4),
                                 st.binary(min_size=16, max_size=16)), max_size=30),
       removed=st.sets(st.integers(0, 5)))
@settings(max_examples=60, deadline=None)
def test_route_lookup_is_peertables_longest_prefix_match(routes: list[list[str]],
                                                         probes: list[bytes],
                                                         removed: set[int]) -> None:
    table = PeerTable()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        native = NativeEngine(sock, EngineConfig(single_peer=False, replay_window=64,
                                                 replay_time=15))
        try:
            for i, iroutes in enumerate(routes):
                vpn4, vpn6 = f"10.{i}.0.2", f"fd00::{i + 2}"
                table.add(Peer(i + 1, ("127.0.0.1", 1), vpn4, vpn6, tuple(iroutes)))
                native.add_peer(i + 1, ("127.0.0.1", 1), vpn4, vpn6, iroutes, 0.0)
            for i in removed & set(range(len(routes))):
                table.remove(i + 1)
                native.remove_peer(i + 1)
            # probe every route's own network too, and the VPN addresses
            wanted = [ipaddress.ip_network(r).network_address.packed for rs in routes for r in rs]
            wanted += [ipaddress.ip_address(f"10.{i}.0.2").packed for i in range(len(routes))]
            for address in [*probes, *wanted]:
                peer = table.by_destination(address)
                assert native._c.route(address) == (peer.peer_id if peer else None), address
        finally:
            native.close()


def test_update_peer_reindexes_routes_and_addresses() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        native = NativeEngine(sock, EngineConfig(single_peer=False, replay_window=64,
                                                 replay_time=15))
        try:
            native.add_peer(1, ("127.0.0.1", 1), "10.8.0.2", None, ["192.168.1.0/24"], 0.0)
            native.add_peer(2, ("127.0.0.1", 2), "10.8.0.3", None, ["192.168.0.0/16"], 0.0)
            assert native._c.route(bytes([192, 168, 1, 7])) == 1
            native.update_peer(1, iroutes=[], vpn_ipv4="10.8.0.9")
            assert native._c.route(bytes([192, 168, 1, 7])) == 2
            assert native._c.route(bytes([10, 8, 0, 2])) is None
            assert native._c.route(bytes([10, 8, 0, 9])) == 1
            native.remove_peer(2)
            assert native._c.route(bytes([192, 168, 1, 7])) is None
            assert native.peer_ids() == [1]
        finally:
            native.close()


def test_a_packet_as_big_as_ip_allows_then_another_are_both_sealed_and_sent() -> None:
    """A TUN with a 65,535-byte MTU: the run of one giant packet and the read after it both
    fit the send buffer (the sanitizer run would see an overflow)."""
    from tests.support.native_harness import PeerSpec, Rig, remote_crypto, set_slot

    spec = PeerSpec(1, "127.0.0.2", 40001, "10.8.0.2")
    config = EngineConfig(single_peer=True, replay_window=64, replay_time=15, gso=True)
    rig = Rig(NativeEngine, config, [spec], vnet_hdr=False)
    try:
        set_slot(rig.engine, 1, 0, 0, "AES-256-GCM", None, 0)
        big = bytes([0x45]) + bytes(65_480 - 1)  # the largest that fits one UDP datagram
        small = bytes([0x45]) + bytes(64_999)  # lands past the old buffer's end
        rig.tun_far.send(big)
        rig.tun_far.send(small)
        assert rig.engine.tx(64, 1.0) == 2
        out = rig.finish()
        peer = remote_crypto(1, 0, "AES-256-GCM")
        assert [peer.decrypt(d, 0.0) for _, _, d in out.sent] == [big, small]
    finally:
        rig.close()
