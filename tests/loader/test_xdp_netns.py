"""The classifier attached to a real veth in a namespace: verdicts as the UDP socket sees them.

Topology: namespace "cl" sends crafted frames through a raw socket into namespace "gw",
where the classifier is attached (native and generic) and a UDP socket listens on 1194.
"""

from __future__ import annotations

import random
import select
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.support.netns import inside, packet_socket, rx_socket
from tests.support.packets import IP_MF, data_v2, frame, openvpn
from xdp_ovpn.loader.attach import attached_prog_id
from xdp_ovpn.loader.maps import DEFAULT_CONTROL_LIMITS, Verdict
from xdp_ovpn.proto.constants import CONTROL_OPCODES, Opcode

pytestmark = [pytest.mark.root, pytest.mark.bpf]

PEER, PORT = 5, 1194
GW4, GW6 = "10.9.0.1", "fd00:9::1"
OURS = [v for v in Verdict if v != Verdict.PASS_OTHER]


@pytest.fixture(scope="module")
def classifier():
    from xdp_ovpn.loader.classifier import Classifier

    with Classifier() as c:
        c.maps.add_listener("0.0.0.0", PORT)
        c.maps.add_listener("::", PORT)
        c.maps.set_peer(PEER, [0])
        yield c


class Gateway:
    """The gw side: attached classifier, UDP sockets; the cl side: a raw frame sender."""

    def __init__(self, lab, classifier, mode: str) -> None:
        self.lab, self.c = lab, classifier
        self.gw, self.cl = lab.add_namespace("gw"), lab.add_namespace("cl")
        lab.link(self.gw, self.cl, addrs=(f"{GW4}/24", "10.9.0.2/24"),
                 extra_addrs=[(f"{GW6}/64", "fd00:9::2/64")])  # fmt: skip
        self.mac = bytes.fromhex(self.gw.ipr.get_links(ifname="veth0")[0]
                                 .get_attr("IFLA_ADDRESS").replace(":", ""))  # fmt: skip
        with inside(self.gw.name):
            self.ifindex = socket.if_nametoindex("veth0")
            self.udp = {p: self._udp(p) for p in (PORT, PORT + 1)}
            self.udp6 = self._udp(PORT, socket.AF_INET6)
            self.attachment = classifier.attach("veth0", mode, pin=False)
        with inside(self.cl.name):
            self.raw = packet_socket("veth0")

    @staticmethod
    def _udp(port: int, family: int = socket.AF_INET) -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
        s.setblocking(False)
        return s

    def close(self) -> None:
        self.c.detach()
        for s in (*self.udp.values(), self.udp6, self.raw):
            s.close()

    def send(self, payload: bytes, **kw) -> Verdict:
        """Send one frame to the listener; wait until the classifier has judged it.

        PASS_OTHER is not watched: the kernel's own IPv6 chatter (MLD, ND) lands there too.
        """
        before = self.c.maps.verdict_counts()
        self.raw.send(frame(payload, dst_mac=self.mac, **kw))
        moved: list[Verdict] = []

        def judged() -> bool:
            after = self.c.maps.verdict_counts()
            moved[:] = [v for v in OURS for _ in range(after[v] - before[v])]
            return bool(moved)

        assert self.lab.wait_for(judged, timeout=5), "the classifier never saw the frame"
        assert len(moved) == 1, moved
        return moved[0]

    def received(self, port: int = PORT, v6: bool = False, timeout: float = 1.0) -> list[bytes]:
        """Datagrams the gateway's socket got (waits up to timeout for the first)."""
        s = self.udp6 if v6 else self.udp[port]
        out = []
        if select.select([s], [], [], timeout)[0]:
            while True:
                try:
                    out.append(s.recv(4096))
                except BlockingIOError:
                    return out
        return out


@pytest.fixture(params=["native", "generic"])
def gateway(request, lab, classifier):
    gw = Gateway(lab, classifier, request.param)
    try:
        yield gw
    finally:
        gw.close()


def test_every_verdict_on_the_wire(gateway):
    g = gateway
    assert g.attachment.link_fd is not None  # a BPF link: dies with this process
    for op in sorted(CONTROL_OPCODES):
        pkt = openvpn(op, body=bytes([op]) * 30)
        assert g.send(pkt) == Verdict.PASS_CONTROL
        assert g.received() == [pkt], Opcode(op).name
    for pkt, verdict in [
        (openvpn(Opcode.DATA_V1), Verdict.PASS_DATA_V1),
        (data_v2(PEER + 1), Verdict.PASS_UNKNOWN_PEER),
        (data_v2(PEER, key_id=3), Verdict.PASS_UNKNOWN_KEY),
        (data_v2(PEER), Verdict.PASS_NO_SOCKET),  # no AF_XDP socket yet: falls back
    ]:
        assert g.send(pkt) == verdict
        assert g.received() == [pkt], verdict
    for pkt, verdict in [
        (openvpn(Opcode.CONTROL_V1, body=bytes(3)), Verdict.DROP_SHORT),
        (b"", Verdict.DROP_SHORT),
        (openvpn(17), Verdict.DROP_BAD_OPCODE),
    ]:
        assert g.send(pkt) == verdict
        assert g.received(timeout=0.2) == []
    ctrl = openvpn(Opcode.CONTROL_V1)
    assert g.send(ctrl, options=bytes([1] * 8)) == Verdict.PASS_CONTROL
    assert g.received() == [ctrl]
    assert g.send(ctrl, dst=GW6) == Verdict.PASS_CONTROL
    assert g.received(v6=True) == [ctrl]
    # This kernel cannot load 8021q, so no VLAN device takes the frame after XDP_PASS.
    assert g.send(ctrl, vlan=7) == Verdict.PASS_CONTROL
    g.raw.send(frame(b"", dport=PORT + 1, dst_mac=g.mac))  # not for a listener: PASS_OTHER
    assert g.received(PORT + 1) == [b""]
    assert g.send(data_v2(PEER), frag=IP_MF) == Verdict.PASS_FRAGMENT
    assert g.send(data_v2(PEER), dst=GW6, frag=1) == Verdict.PASS_FRAGMENT


def test_known_peer_data_v2_is_redirected_to_the_bound_af_xdp_socket(gateway):
    g = gateway
    with inside(g.gw.name):
        xsk = rx_socket("veth0", 0)
    try:
        g.c.maps.bind_queue(0, xsk.fileno())
        assert g.send(data_v2(PEER)) == Verdict.REDIRECT
        assert g.send(data_v2(PEER, size=1400), dst=GW6) == Verdict.REDIRECT
        assert g.lab.wait_for(lambda: xsk.rx_available() == 2, timeout=5)
        assert g.received(timeout=0.2) == [] and g.received(v6=True, timeout=0.1) == []
        # Everything else still reaches the socket while the AF_XDP socket is bound.
        ctrl = openvpn(Opcode.ACK_V1)
        assert g.send(ctrl) == Verdict.PASS_CONTROL and g.received() == [ctrl]
    finally:
        g.c.maps.unbind_queue(0)
        xsk.close()


def test_fuzz_on_the_wire_steers_only_known_data_v2_and_delivers_all_valid_control(gateway):
    """As a server's data plane sets it up: authoritative, control limits on, and the
    sender a connected peer, whose control packets are never limited."""
    g = gateway
    with inside(g.gw.name):
        xsk = rx_socket("veth0", 0)
    rng = random.Random(4242)
    sent_control, got, steerable = [], [], 0
    try:
        g.c.maps.bind_queue(0, xsk.fileno())
        g.c.maps.set_authoritative(True)
        g.c.maps.set_control_limits(DEFAULT_CONTROL_LIMITS)
        g.c.maps.add_remote("10.9.0.2", 40000)
        base = g.c.maps.verdict_counts()
        for i in range(2000):
            kind = rng.random()
            if kind < 0.25:  # a valid control packet the gateway must receive
                body = rng.randbytes(rng.randrange(9, 200))
                pkt = openvpn(rng.choice(sorted(CONTROL_OPCODES)), rng.randrange(8), body)
                sent_control.append(pkt)
            elif kind < 0.4:
                pkt = data_v2(PEER, 0, rng.randrange(24, 1400))
                steerable += 1
            else:
                pkt = bytearray(rng.randbytes(rng.randrange(0, 300)))
                if pkt and rng.random() < 0.5:
                    pkt[0] = Opcode.DATA_V2 << 3 | rng.randrange(8)
                if len(pkt) >= 24 and pkt[0] >> 3 == Opcode.DATA_V2 and pkt[0] & 7 == 0:
                    steerable += int.from_bytes(pkt[1:4], "big") == PEER
                pkt = bytes(pkt)
            g.raw.send(frame(pkt, dst_mac=g.mac))
            if i % 64 == 63:  # pace: let the veth ring drain so nothing is lost in transit
                assert g.lab.wait_for(lambda n=i + 1: _judged(g, base) == n, timeout=5)
                # Drain as we go: SO_RCVBUF is capped by net.core.rmem_max (212992 on a stock
                # kernel, as in the VM guests), too small for all 2000 frames' control packets.
                got += g.received(timeout=0)
        assert g.lab.wait_for(lambda: _judged(g, base) == 2000, timeout=5)
        while more := g.received():  # the socket also gets the fuzz that the stack delivers
            got += more
        counts = g.c.maps.verdict_counts()
        assert counts[Verdict.REDIRECT] - base[Verdict.REDIRECT] == steerable
        assert g.lab.wait_for(lambda: xsk.rx_available() == steerable, timeout=5)
        assert set(sent_control) <= set(got)
        assert counts[Verdict.DROP_CONTROL_SOURCE] == base[Verdict.DROP_CONTROL_SOURCE]
        assert counts[Verdict.DROP_UNKNOWN_PEER] > base[Verdict.DROP_UNKNOWN_PEER]
    finally:
        g.c.maps.unbind_queue(0)
        g.c.maps.set_authoritative(False)
        g.c.maps.remove_remote("10.9.0.2", 40000)
        g.c.maps.set_control_limits(None)
        xsk.close()


def _judged(g: Gateway, base: dict) -> int:
    now = g.c.maps.verdict_counts()
    return sum(now[v] - base[v] for v in OURS)


_OWNER = textwrap.dedent("""
    import sys, time
    from xdp_ovpn.loader.classifier import Classifier
    from tests.support.netns import rx_socket
    c = Classifier()
    c.attach("veth0", sys.argv[1])
    c.maps.add_listener("0.0.0.0", 1194)
    c.maps.set_peer(5, [0])
    xsk = rx_socket("veth0", 0)
    c.maps.bind_queue(0, xsk.fileno())
    print("ready", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_sigkill_of_the_owner_leaves_no_steering(lab, mode):
    gw, cl = lab.add_namespace("gw"), lab.add_namespace("cl")
    lab.link(gw, cl, addrs=(f"{GW4}/24", "10.9.0.2/24"))
    mac = bytes.fromhex(
        gw.ipr.get_links(ifname="veth0")[0].get_attr("IFLA_ADDRESS").replace(":", "")
    )
    owner = gw.popen([sys.executable, "-c", _OWNER, mode], stdout=subprocess.PIPE, text=True,
                     cwd=str(_repo_root()))  # fmt: skip
    assert owner.stdout.readline().strip() == "ready"
    with inside(gw.name):
        udp = Gateway._udp(PORT)
        ifindex = socket.if_nametoindex("veth0")
    with inside(cl.name):
        raw = packet_socket("veth0")
    try:
        pkt = data_v2(PEER)
        raw.send(frame(pkt, dst_mac=mac))
        assert not select.select([udp], [], [], 0.5)[0]  # steered away from the socket
        owner.kill()
        owner.wait()
        with inside(gw.name):
            assert lab.wait_for(lambda: attached_prog_id(ifindex) is None, timeout=5)
        raw.send(frame(pkt, dst_mac=mac))
        assert select.select([udp], [], [], 5)[0]
        assert udp.recv(4096) == pkt
    finally:
        udp.close()
        raw.close()


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]
