"""Two native engines sharing their keys' slots, as two data-plane workers do: packet-ids
come from one live counter whichever engine sends, and a packet one engine took is a replay
for the other; for a key in 2.7's epoch format also the send epoch's rotation and the
receive epochs (native/epoch.c). No root (loopback sockets, a socketpair as the TUN)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import sys
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

    def __init__(self, peer: socket.socket, shared: memoryview | None,
                 epoch: bool = False, cipher: str = CIPHER) -> None:
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
        ek, en, dk, dn = key_material(PEER, 0, cipher, epoch)
        self.engine.new_key(PEER, KeySlot(0), 0, cipher, ek, en, dk, dn, shared=shared,
                            epoch=epoch)

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


class _Rig:
    """The workers, the peer's socket and the key's slot they share (if they do)."""

    def __init__(self, shared: bool, epoch: bool, cipher: str) -> None:
        from xdp_ovpn import _native

        self.ledger = Ledger(slots=2, key_slot_size=_native.key_shared_size(64, 15.0))
        self.peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.peer.bind(("127.0.0.1", 0))
        self.slot = self.ledger.slot(self.ledger.allocate()) if shared else None
        self.epoch, self.cipher = epoch, cipher
        self.workers: list[_Worker] = []

    def worker(self) -> _Worker:
        """Another worker (or a replacement) taking the key."""
        self.workers.append(_Worker(self.peer, self.slot, self.epoch, self.cipher))
        return self.workers[-1]

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.peer.close()
        self.slot = None
        self.ledger.close()


@contextlib.contextmanager
def _rig(shared: bool, epoch: bool = False, cipher: str = CIPHER) -> Iterator[_Rig]:
    rig = _Rig(shared, epoch, cipher)
    try:
        yield rig
    finally:
        rig.close()


@contextlib.contextmanager
def _two_workers(shared: bool, epoch: bool = False
                 ) -> Iterator[tuple[_Worker, _Worker, socket.socket]]:
    with _rig(shared, epoch) as rig:
        yield rig.worker(), rig.worker(), rig.peer


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


# -- 2.7's epoch format ---------------------------------------------------------------------

COUNTER_MAX = (1 << 48) - 1


def _sent_epoch_ids(peer: socket.socket) -> list[tuple[int, int]]:
    """(epoch, counter) of each packet the peer got, and the packets."""
    ids = []
    for packet in _sent_packets(peer):
        word = struct.unpack_from("!Q", packet, 4)[0]
        ids.append((word >> 48, word & COUNTER_MAX))
    return ids


def _sent_packets(peer: socket.socket) -> list[bytes]:
    packets = []
    with contextlib.suppress(BlockingIOError):
        while True:
            packets.append(peer.recv(4096, socket.MSG_DONTWAIT))
    return packets


def _set_send_word(slot: memoryview, epoch: int, counter: int) -> None:
    """The slot's send word as if `counter` ids of `epoch` were used (module.c's hook)."""
    from xdp_ovpn import _native

    at = _native.EPOCH_SEND_WORD
    slot[at:at + 8] = (epoch << 48 | counter).to_bytes(8, sys.byteorder)


# (cipher, the send word's counter before the first packet): ChaCha20-Poly1305 has no usage
# limit, so its key moves on at the counter's end; AES-GCM's at its usage limit (2^36 - 1),
# blocks sealed plus counter: three blocks a packet here, by both engines together, so the
# third packet crosses it (counted per engine, none would).
ROTATIONS = [("CHACHA20-POLY1305", COUNTER_MAX - 2), ("AES-256-GCM", (1 << 36) - 1 - 5)]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize(("cipher", "start"), ROTATIONS)
def test_epoch_ids_are_unique_across_engines_and_a_send_epoch_rotation(
        shared: bool, cipher: str, start: int) -> None:
    """Near the key's end the send epoch moves on for both engines; each derives the next
    epoch's key itself, and the peer opens every packet."""
    with _rig(shared, epoch=True, cipher=cipher) as rig:
        a, b = rig.worker(), rig.worker()
        if shared:
            _set_send_word(rig.slot, 1, start)
        for worker in (a, b, a, b, a, b):
            worker.send_one()
        packets = _sent_packets(rig.peer)
    ids = [divmod(struct.unpack_from("!Q", p, 4)[0], 1 << 48) for p in packets]
    assert len(ids) == 6
    if not shared:  # the failure the slot prevents: (epoch, counter) twice, one nonce
        assert len(set(ids)) < len(ids)
        return
    assert ids == [(1, start + 1), (1, start + 2), (2, 1), (2, 2), (2, 3), (2, 4)]
    crypto = remote_crypto(PEER, 0, cipher, epoch=True)
    assert all(crypto.decrypt(p, 1.0) == INNER for p in packets)


@pytest.mark.parametrize("shared", [True, False])
def test_an_epoch_packet_one_engine_took_is_a_replay_for_the_other(shared: bool) -> None:
    with _two_workers(shared, epoch=True) as (a, b, peer):
        crypto = remote_crypto(PEER, 0, CIPHER, epoch=True)
        packet = crypto.encrypt(INNER, 1.0)
        assert a.receive(packet, peer)
        taken = b.receive(packet, peer)
        drops = b.engine.peer_stats(PEER).drops
        later = crypto.encrypt(INNER, 1.0)
        assert b.receive(later, peer)
        replayed = a.receive(later, peer)
    if shared:
        assert not taken and not replayed and drops.get("ReplayError") == 1
    else:
        assert taken and replayed and not drops.get("ReplayError")


def test_a_receive_epoch_one_engine_moved_to_is_the_others_too() -> None:
    """The peer moves on to epoch 2 through a: b's sends follow, b takes a late epoch-1
    packet (the retiring key) once, and an epoch-2 one a took is a replay for b. Then the
    peer jumps to epoch 4 through b: a refuses epoch 1 (gone) and takes epoch 2 (retiring)."""
    with _two_workers(True, epoch=True) as (a, b, peer):
        crypto = remote_crypto(PEER, 0, CIPHER, epoch=True)
        first, late, lost = (crypto.encrypt(INNER, 1.0) for _ in range(3))
        assert a.receive(first, peer)
        crypto.rotate_send()
        second, late2 = crypto.encrypt(INNER, 1.0), crypto.encrypt(INNER, 1.0)
        assert a.receive(second, peer)
        b.send_one()
        assert _sent_epoch_ids(peer) == [(2, 1)]  # the send key followed the peer, for b too
        assert b.receive(late, peer)
        assert not b.receive(late, peer) and not b.receive(second, peer)
        assert b.engine.peer_stats(PEER).drops.get("ReplayError") == 2
        crypto.rotate_send()
        crypto.rotate_send()
        assert b.receive(crypto.encrypt(INNER, 1.0), peer)  # epoch 4: a future key
        assert not a.receive(lost, peer)
        assert a.engine.peer_stats(PEER).drops.get("KeyError_") == 1
        assert a.receive(late2, peer)
        a.send_one()
        assert _sent_epoch_ids(peer) == [(4, 1)]


def test_a_replacement_engine_goes_on_from_the_slot() -> None:
    """A worker killed and replaced: the new engine attaches to the same slot and goes on
    from the last counter sent, with the windows as they were."""
    with _rig(True, epoch=True) as rig:
        a = rig.worker()
        crypto = remote_crypto(PEER, 0, CIPHER, epoch=True)
        packet = crypto.encrypt(INNER, 1.0)
        assert a.receive(packet, rig.peer)
        for _ in range(3):
            a.send_one()
        a.close()
        rig.workers.remove(a)
        c = rig.worker()
        c.send_one()
        assert [c for _e, c in _sent_epoch_ids(rig.peer)] == [1, 2, 3, 4]
        assert not c.receive(packet, rig.peer)
        assert c.receive(crypto.encrypt(INNER, 1.0), rig.peer)


SO_RCVBUFFORCE = 33  # asm-generic/socket.h: SO_RCVBUF past rmem_max (CAP_NET_ADMIN)


def _send_in_child(rig: _Rig, go: tuple[int, int], count: int) -> int:
    """Fork a worker that waits for the pipe `go` to close, then sends `count` packets."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.close(go[1])
        worker = _Worker(rig.peer, rig.slot, True, "CHACHA20-POLY1305")
        os.read(go[0], 1)
        for _ in range(count):
            worker.send_one()
        code = 0
    finally:
        os._exit(code)


def test_epoch_ids_stay_unique_with_two_processes_sending_at_once() -> None:
    """Two processes, as two workers are, send at once across a send-epoch rotation: the
    slot's word hands each (epoch, counter) out once."""
    count = 3000
    with _rig(True, epoch=True, cipher="CHACHA20-POLY1305") as rig:
        rig.worker()  # sets the slot up, then stands by
        _set_send_word(rig.slot, 1, COUNTER_MAX - count)
        try:  # room for all 6000 datagrams however slowly this process drains them (root)
            rig.peer.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 24)
        except PermissionError:
            rig.peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        go = os.pipe()
        children = [_send_in_child(rig, go, count) for _ in range(2)]
        os.close(go[1])
        ids: list[tuple[int, int]] = []
        codes = []
        for pid in children:
            while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0):
                ids += _sent_epoch_ids(rig.peer)
            codes.append(os.waitstatus_to_exitcode(done[1]))
        ids += _sent_epoch_ids(rig.peer)
        os.close(go[0])
    assert codes == [0, 0]
    assert len(set(ids)) == len(ids) > count  # the socket may drop some, never repeat one
    assert {epoch for epoch, _ in ids} == {1, 2}
