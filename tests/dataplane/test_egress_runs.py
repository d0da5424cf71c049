"""Egress GSO runs for a server with several peers: a run ends when the next packet goes to
another peer or is longer, and that packet (already read behind the run) moves to the front
of the buffer. No root: the "TUN" is a datagram socketpair that keeps packet boundaries, the
peers are UDP sockets on loopback that decrypt what arrives."""

from __future__ import annotations

import socket

from tests.support.packets import udp4
from xdp_ovpn.dataplane.io import Egress
from xdp_ovpn.dataplane.peers import Peer, PeerTable
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey

KEY = DataKey("AES-256-GCM", bytes(range(32)), bytes(range(8)))


def _inner(dst: str, size: int, tag: int) -> bytes:
    return udp4("10.8.0.1", dst, 5000, 6000, bytes([tag]) * size)


def test_runs_switch_peers_and_sizes_without_losing_or_mixing_packets() -> None:
    peers = PeerTable()
    links, ends = {}, {}
    for peer_id, vpn in ((1, "10.8.0.2"), (2, "10.8.0.3")):
        link = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        link.bind(("127.0.0.1", 0))
        link.settimeout(2)
        links[vpn] = link
        peer = Peer(peer_id, link.getsockname(), vpn_ipv4=vpn)
        peer.keys[0] = DataChannelCrypto(0, peer_id, KEY, KEY)
        ends[vpn] = DataChannelCrypto(0, peer_id, KEY, KEY)  # the peer's own receiver
        peers.add(peer)
    # a a b a(short) a a(long: a new run) b
    plan = [("10.8.0.2", 1000), ("10.8.0.2", 1000), ("10.8.0.3", 1000), ("10.8.0.2", 300),
            ("10.8.0.2", 1000), ("10.8.0.2", 1200), ("10.8.0.3", 50)]
    packets = [_inner(dst, size, i) for i, (dst, size) in enumerate(plan)]
    tun, feed = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with tun, feed, sock, links["10.8.0.2"], links["10.8.0.3"]:
        tun.setblocking(False)
        for p in packets:
            feed.send(p)
        egress = Egress(tun.fileno(), sock, peers, lambda note: None)
        assert egress.poll() == len(packets)
        got: dict[str, list[bytes]] = {vpn: [] for vpn in links}
        for vpn, link in links.items():
            want = sum(1 for dst, _ in plan if dst == vpn)
            while len(got[vpn]) < want:
                got[vpn].append(ends[vpn].decrypt(link.recv(65536), 0.0))
    for vpn in links:
        assert got[vpn] == [p for p, (dst, _) in zip(packets, plan, strict=True) if dst == vpn]
    assert egress.sends == 6  # a+a, b, a(short), a, a(long), b
    assert [p.stats.tx_packets for p in peers] == [5, 2]
