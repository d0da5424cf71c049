"""The packet loops: DATA_V2 from a peer namespace ends up in the TUN (ingress, AF_XDP), and
packets routed into the TUN leave as DATA_V2 on the UDP socket (egress, GSO-batched).

The peer's packets are made with our own DataChannelCrypto holding the mirrored
keys; wire compatibility of that codec with openvpn is proven in tests/proto.
"""

from __future__ import annotations

import select
import socket

import pytest

from tests.support.nsfork import Sender, in_netns, popen_in
from tests.support.packets import RECEIVER, udp4
from xdp_ovpn.dataplane.api import PeerExpired, PeerFloated
from xdp_ovpn.dataplane.io import DataCrypto, Egress, Ingress
from xdp_ovpn.dataplane.peers import Peer, PeerTable
from xdp_ovpn.dataplane.tun import Tun
from xdp_ovpn.dataplane.xsk import XskSocket
from xdp_ovpn.proto.constants import OCC_EXIT_PAYLOAD, PING_PAYLOAD
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey
from xdp_ovpn.proto.epoch import EpochDataChannel
from xdp_ovpn.proto.epochkeys import EpochKey

pytestmark = [pytest.mark.root, pytest.mark.bpf]

A_IP, B_IP = "10.1.0.1", "10.1.0.2"
PORT = 1194
PEER_ID = 7
TUN_IP, PEER_VPN_IP = "10.8.0.1", "10.8.0.2"

K_C2S = DataKey("AES-256-GCM", bytes(range(32)), bytes(range(100, 108)))
K_S2C = DataKey("AES-256-GCM", bytes(range(32, 64)), bytes(range(200, 208)))


def _inner(payload: bytes) -> bytes:
    return udp4(PEER_VPN_IP, TUN_IP, 5000, 6000, payload)


def _one_peer(epoch: bool = False) -> tuple[DataCrypto, PeerTable, Peer]:
    """The server's table with the peer at B_IP:40000, and that peer's own crypto (client);
    with `epoch` both in 2.7's epoch data format."""
    if epoch:
        c2s, s2c = EpochKey(1, K_C2S.key), EpochKey(1, K_S2C.key)
        client: DataCrypto = EpochDataChannel(0, PEER_ID, "AES-256-GCM", c2s, s2c)
        server: DataCrypto = EpochDataChannel(0, PEER_ID, "AES-256-GCM", s2c, c2s)
    else:
        client = DataChannelCrypto(0, PEER_ID, encrypt=K_C2S, decrypt=K_S2C)
        server = DataChannelCrypto(0, PEER_ID, encrypt=K_S2C, decrypt=K_C2S)
    peers = PeerTable()
    peer = Peer(PEER_ID, (B_IP, 40000), vpn_ipv4=PEER_VPN_IP)
    peer.keys[0] = server
    peers.add(peer)
    return client, peers, peer


def _ingress_cases(b, epoch: bool) -> dict:
    from tests.support.xsk_redirect import redirect_udp

    client, peers, peer = _one_peer(epoch)
    notes: list = []
    one = client.encrypt(_inner(b"one"), 0)
    tampered = bytearray(client.encrypt(_inner(b"two"), 0))
    tampered[-1] ^= 1
    stranger = bytearray(client.encrypt(_inner(b"who"), 0))
    stranger[1:4] = (99).to_bytes(3, "big")  # peer-id nobody has
    with (
        redirect_udp("veth0", PORT) as prog,
        XskSocket("veth0", tx_size=0) as xsk,
        Tun(mtu=1400) as tun,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as inner,
    ):
        prog.insert(0, xsk.fileno())
        xsk.fill(xsk.umem.frames())
        tun.add_address(f"{TUN_IP}/24")
        tun.up()
        inner.bind((TUN_IP, 6000))
        inner.setblocking(False)
        ingress = Ingress(xsk, tun.fileno(), peers, notes.append)

        def deliver(sender: Sender, packet: bytes) -> None:
            sender.send(packet)
            while select.select([xsk], [], [], 5)[0]:
                if ingress.poll():
                    return
            raise AssertionError("the packet never reached the RX ring")

        with Sender(b.name, A_IP, PORT, 40000) as home, Sender(b.name, A_IP, PORT, 40001) as away:
            deliver(home, one)
            deliver(home, one)  # replayed
            deliver(home, bytes(tampered))
            deliver(home, bytes(stranger))
            deliver(home, client.encrypt(PING_PAYLOAD, 0))
            deliver(away, client.encrypt(_inner(b"three"), 0))  # the peer floats
            floated_remote = peer.remote
            deliver(away, client.encrypt(OCC_EXIT_PAYLOAD, 0))
        received = []
        while select.select([inner], [], [], 1)[0]:
            received.append(inner.recv(100))
            if len(received) == 2:
                break
        return {
            "received": received,
            "drops": dict(peer.stats.drops),
            "unattributed": dict(ingress.drops),
            "link_rx": peer.stats.link_rx_packets,
            "tun_rx": peer.stats.rx_packets,
            "notes": notes,
            "floated_remote": floated_remote,
            "peers_left": len(peers),
        }


@pytest.mark.parametrize("epoch", [False, True], ids=["2.6-format", "epoch-format"])
def test_ingress_decrypts_to_tun_and_counts_every_drop(lab, epoch):
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, addrs=(f"{A_IP}/24", f"{B_IP}/24"))
    r = in_netns(a.name, _ingress_cases, b, epoch)
    assert r["received"] == [b"one", b"three"]
    assert r["drops"] == {"ReplayError": 1, "AuthError": 1}
    assert r["unattributed"] == {"unknown peer-id": 1}
    assert r["link_rx"] == 4  # one, ping, three, exit: authenticated
    assert r["tun_rx"] == 2
    assert r["floated_remote"] == (B_IP, 40001)
    assert r["notes"] == [PeerFloated(PEER_ID, (B_IP, 40001)), PeerExpired(PEER_ID, "exit")]
    assert r["peers_left"] == 0


def _egress_cases(b, epoch: bool) -> dict:
    client, peers, peer = _one_peer(epoch)
    # A run of 20 equal packets closed by a short one, then a run of 5: two GSO sends.
    payloads = [b"%04d" % i + bytes(996) for i in range(20)] + [b"short"]
    payloads += [b"%04d" % i + bytes(996) for i in range(20, 25)]
    receiver = popen_in(b.name, RECEIVER, 40000, len(payloads))
    try:
        assert receiver.stdout.readline().strip() == "ready"
        with (
            Tun(mtu=1400) as tun,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as link,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as app,
        ):
            tun.add_address(f"{TUN_IP}/24")
            tun.up()
            link.bind((A_IP, PORT))
            egress = Egress(tun.fileno(), link, peers, lambda note: None)
            app.sendto(b"nobody", ("10.8.0.99", 6000))  # routed into the TUN, but no peer
            for payload in payloads:
                app.sendto(payload, (PEER_VPN_IP, 6000))
            read = 0
            while read < len(payloads) + 1 and select.select([tun], [], [], 5)[0]:
                read += egress.poll()
        lines = [receiver.stdout.readline().split() for _ in payloads]
    finally:
        receiver.kill()
        receiver.wait()
    inner = [client.decrypt(bytes.fromhex(line[0]), 0) for line in lines]
    return {
        "inner_payloads": [packet[28:] for packet in inner],
        "sources": {tuple(line[1:]) for line in lines},
        "sends": egress.sends,
        "gso": egress.gso,
        "drops": dict(egress.drops),
        "tx": (peer.stats.tx_packets, peer.stats.link_tx_packets),
        "payloads": payloads,
    }


@pytest.mark.parametrize("epoch", [False, True], ids=["2.6-format", "epoch-format"])
def test_egress_encrypts_tun_packets_to_the_peer_in_gso_batches(lab, epoch):
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, addrs=(f"{A_IP}/24", f"{B_IP}/24"))
    r = in_netns(a.name, _egress_cases, b, epoch)
    assert r["inner_payloads"] == r["payloads"]
    assert r["sources"] == {(A_IP, str(PORT))}
    assert r["gso"] and r["sends"] == 2
    assert r["drops"].get("no route to peer", 0) >= 1
    assert r["tx"] == (26, 26)
