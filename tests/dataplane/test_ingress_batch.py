"""The ingress loop's per-batch caches (peer and key by DATA_V2 word, the peer's source) must
not leak one packet's state into the next: frames of several peers, a float, an unknown
peer-id, a replay, a keepalive ping, a payload that is not IP and a packet from another
peer's VPN address in one RX batch. No root: the batch is laid out in a bytearray as the
kernel would in the UMEM, and the "TUN" is a datagram socket that keeps packet boundaries."""

from __future__ import annotations

import socket

from tests.support.packets import ether, udp4
from xdp_ovpn.dataplane.api import BAD_SOURCE, PeerFloated
from xdp_ovpn.dataplane.io import Ingress
from xdp_ovpn.dataplane.peers import Peer, PeerTable
from xdp_ovpn.proto.constants import PING_PAYLOAD
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey

FRAME = 2048
MACS = (b"\x02" * 6, b"\x04" * 6)
KEY = DataKey("AES-256-GCM", bytes(range(32)), bytes(range(8)))


class _Umem:
    def __init__(self, frames: int) -> None:
        self.view = memoryview(bytearray(frames * FRAME))
        self.frame_size = FRAME


class _RxBatch:
    """The RX side of an AF_XDP socket holding one batch of frames."""

    def __init__(self, frames: list[bytes]) -> None:
        self.umem = _Umem(len(frames))
        self.batch = ([i * FRAME for i in range(len(frames))], [len(f) for f in frames])
        for addr, frame in zip(self.batch[0], frames, strict=True):
            self.umem.view[addr : addr + len(frame)] = frame
        self.filled: list[int] = []

    def rx_batch(self, max_n: int) -> tuple[list[int], list[int]]:
        batch, self.batch = self.batch, ([], [])
        return batch

    def fill(self, addrs: list[int]) -> int:
        self.filled += addrs
        return len(addrs)


def _peer(peer_id: int, remote: tuple[str, int], vpn_ipv4: str) -> tuple[Peer, DataChannelCrypto]:
    peer = Peer(peer_id, remote, vpn_ipv4)
    peer.keys[0] = DataChannelCrypto(0, peer_id, KEY, KEY)
    return peer, DataChannelCrypto(0, peer_id, KEY, KEY)  # the remote end's sender


def _frame(src: str, sport: int, packet: bytes) -> bytes:
    return ether(udp4(src, "10.1.0.1", sport, 1194, packet), MACS[0], src_mac=MACS[1])


def _inner(src: str, text: bytes) -> bytes:
    """A tunnelled packet from VPN address `src`."""
    return udp4(src, "10.8.0.1", 5000, 5000, text)


def test_one_batch_of_mixed_peers_keeps_each_packet_to_its_own_peer() -> None:
    a, a_tx = _peer(1, ("10.1.0.2", 40000), "10.8.0.2")
    b, b_tx = _peer(2, ("10.1.0.3", 40000), "10.8.0.3")
    peers = PeerTable()
    peers.add(a)
    peers.add(b)
    b_first = b_tx.encrypt(_inner("10.8.0.3", b"b-one"), 0.0)
    stranger = bytearray(a_tx.encrypt(_inner("10.8.0.2", b"who"), 0.0))
    stranger[1:4] = (99).to_bytes(3, "big")
    frames = [
        _frame("10.1.0.2", 40000, a_tx.encrypt(_inner("10.8.0.2", b"a-one"), 0.0)),
        _frame("10.1.0.3", 40000, b_first),
        _frame("10.1.0.9", 40001, a_tx.encrypt(_inner("10.8.0.2", b"a-two"), 0.0)),  # floats
        _frame("10.1.0.2", 40000, bytes(stranger)),
        _frame("10.1.0.3", 40000, b_first),  # replayed
        _frame("10.1.0.9", 40001, a_tx.encrypt(_inner("10.8.0.3", b"as-b"), 0.0)),  # spoofed
        _frame("10.1.0.9", 40001, a_tx.encrypt(b"not IP", 0.0)),
        _frame("10.1.0.9", 40001, a_tx.encrypt(PING_PAYLOAD, 0.0)),  # keepalive: no drop
        _frame("10.1.0.9", 40001, a_tx.encrypt(_inner("10.8.0.2", b"a-three"), 0.0)),
    ]
    xsk = _RxBatch(frames)
    notes: list = []
    tun_in, tun_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with tun_in, tun_out:
        ingress = Ingress(xsk, tun_in.fileno(), peers, notes.append)  # type: ignore[arg-type]
        assert ingress.poll() == len(frames)
        tun_out.setblocking(False)
        written = [tun_out.recv(2048)[28:] for _ in range(4)]
    assert written == [b"a-one", b"b-one", b"a-two", b"a-three"]
    assert (a.stats.rx_packets, b.stats.rx_packets) == (3, 1)
    assert a.last_rx and b.last_rx  # both authenticated in this batch
    assert b.stats.drops == {"ReplayError": 1}
    assert a.stats.drops == {BAD_SOURCE: 2}
    assert ingress.drops == {"unknown peer-id": 1}
    assert notes == [PeerFloated(1, ("10.1.0.9", 40001))] and a.remote == ("10.1.0.9", 40001)
    assert sorted(xsk.filled) == [i * FRAME for i in range(len(frames))]
