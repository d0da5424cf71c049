"""Two native engines sharing their keys' slots, as two data-plane workers do: packet-ids
come from one live counter whichever engine sends, and a packet one engine took is a replay
for the other. No root (loopback sockets, a socketpair as the TUN)."""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.support.native_harness import key_material, remote_crypto
from xdp_ovpn.dataplane.api import KeySlot
from xdp_ovpn.dataplane.engine import EngineConfig, native_available
from xdp_ovpn.dataplane.ledger import Ledger

pytestmark = pytest.mark.skipif(not native_available(), reason="native engine not built")

CIPHER = "AES-256-GCM"
PEER = 5
CONFIG = EngineConfig(single_peer=True, replay_window=64, replay_time=15, gso=False)
# An IPv4 packet to the peer (single peer: any destination is the peer's).
INNER = bytes.fromhex("4500001c00000000401100000a0800010a080002") + b"\0" * 8


class _Worker:
    """One engine with its UDP socket and its TUN socketpair."""

    def __init__(self, peer: socket.socket, shared: memoryview | None) -> None:
        from xdp_ovpn.dataplane.nativeengine import NativeEngine

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.tun, self.tun_far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.tun, self.tun_far):
            s.setblocking(False)
        self.engine = NativeEngine(self.sock, CONFIG)
        self.engine.set_tun(self.tun.fileno(), False)
        self.engine.add_peer(PEER, peer.getsockname(), "10.8.0.2", None, (), 0.0)
        ek, en, dk, dn = key_material(PEER, 0, CIPHER)
        self.engine.new_key(PEER, KeySlot(0), 0, CIPHER, ek, en, dk, dn, shared=shared)

    def send_one(self) -> None:
        self.tun_far.send(INNER)
        assert self.engine.tx(8, 1.0) == 1

    def receive(self, packet: bytes, peer: socket.socket) -> bool:
        """Whether the engine took `packet` (sent to it by the peer) to the TUN."""
        peer.sendto(packet, self.sock.getsockname())
        self.engine.rx_socket(8, 1.0)
        try:
            self.tun_far.recv(4096)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        self.engine.close()
        for s in (self.sock, self.tun, self.tun_far):
            s.close()


@contextlib.contextmanager
def _two_workers(shared: bool) -> Iterator[tuple[_Worker, _Worker, socket.socket]]:
    from xdp_ovpn import _native

    ledger = Ledger(slots=2, key_slot_size=_native.key_shared_size(64, 15.0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    index = ledger.allocate()
    workers = [_Worker(peer, ledger.slot(index) if shared else None) for _ in range(2)]
    try:
        yield workers[0], workers[1], peer
    finally:
        for w in workers:
            w.close()
        peer.close()
        ledger.close()


def _sent_ids(peer: socket.socket) -> list[int]:
    ids = []
    with contextlib.suppress(BlockingIOError):
        while True:
            ids.append(struct.unpack_from("!I", peer.recv(4096, socket.MSG_DONTWAIT), 4)[0])
    return ids


@pytest.mark.parametrize("shared", [True, False])
def test_packet_ids_come_from_one_counter_whichever_engine_sends(shared: bool) -> None:
    with _two_workers(shared) as (a, b, peer):
        for worker in (a, b, a, a, b):
            worker.send_one()
        ids = _sent_ids(peer)
    assert len(ids) == 5
    if shared:
        assert ids == [1, 2, 3, 4, 5]
    else:  # the failure the shared slot prevents: two senders, one nonce space
        assert len(set(ids)) < len(ids)


@pytest.mark.parametrize("shared", [True, False])
def test_a_packet_one_engine_took_is_a_replay_for_the_other(shared: bool) -> None:
    with _two_workers(shared) as (a, b, peer):
        crypto = remote_crypto(PEER, 0, CIPHER)
        packet = crypto.encrypt(INNER, 1.0)
        assert a.receive(packet, peer)
        taken = b.receive(packet, peer)
        drops = b.engine.peer_stats(PEER).drops
        later = crypto.encrypt(INNER, 1.0)
        assert b.receive(later, peer) and a.receive(crypto.encrypt(INNER, 1.0), peer)
        assert not a.receive(later, peer) if shared else a.receive(later, peer)
    if shared:
        assert not taken and drops.get("ReplayError") == 1
    else:
        assert taken and not drops.get("ReplayError")


def test_the_last_packet_any_engine_took_counts_for_keepalive() -> None:
    with _two_workers(shared=True) as (a, b, peer):
        crypto = remote_crypto(PEER, 0, CIPHER)
        peer.sendto(crypto.encrypt(INNER, 1.0), b.sock.getsockname())
        b.engine.rx_socket(8, 42.0)
        [(peer_id, last_rx, _last_tx)] = a.engine.activity()
    assert peer_id == PEER and last_rx == 42.0  # a (the primary) expires and pings
