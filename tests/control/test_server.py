"""xdp-ovpn as a server with real openvpn 2.6 clients: many clients, renegotiation, expiry."""

from __future__ import annotations

import re
import sys

import pytest

from tests.support.interop import kill, links, pids, ping, star, underlay
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]


def test_five_openvpn_clients_at_once(lab) -> None:
    hub, spokes = star(lab, 5)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt")
    server = OpenVPNServer(hub, spec, program="xdp-ovpn")
    clients = [
        OpenVPNClient(ns, server, remote=addr, cn=f"client{i}")
        for i, (ns, addr) in enumerate(spokes)
    ]
    with started(server), started(*clients):
        addresses = {str(c.tun_ipv4().ip) for c in clients}
        assert len(addresses) == 5  # the pool gave each its own address
        for client, (ns, _) in zip(clients, spokes, strict=True):
            ping(ns, server.tunnel_ipv4, count=2)
            ping(hub, str(client.tun_ipv4().ip), count=1)
        peer_ids = set(re.findall(r"peer-id (\d+), key-id 0", server.log()))
        assert peer_ids == {"0", "1", "2", "3", "4"}


@pytest.mark.parametrize("xdp_side", ["server", "client"])
def test_renegotiation_every_10s_loses_no_ping(lab, xdp_side: str) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), wrapping="tls-auth", proto=net.proto)
    extra = ["reneg-sec 10"]
    server = OpenVPNServer(net.server_ns, spec, extra=extra,
                           program="xdp-ovpn" if xdp_side == "server" else "openvpn")
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, extra=extra,
                           program="xdp-ovpn" if xdp_side == "client" else "openvpn")
    with started(server), started(client):  # server first: no refused first try
        out = net.client_ns.run(
            ["ping", "-c", "300", "-i", "0.1", "-W", "2", server.tunnel_ipv4], timeout=90
        ).stdout
        assert " 0% packet loss" in out, out
        ours = server if xdp_side == "server" else client
        key_ids = set(re.findall(r"Data Channel: cipher .* key-id (\d+)", ours.log()))
        assert {"0", "1", "2"} <= key_ids  # at least two renegotiations happened


def test_killed_client_is_dropped_by_keepalive(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto, keepalive=(1, 3))
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn")
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
    with started(server), started(client):  # server first: no refused first try
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        mark = server.log_size()
        kill(client)
        server.wait_for_log(r"Inactivity timeout \(--ping-restart\)", timeout=5, since=mark)
        # The same client can come back and gets its address again.
        again = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
        with started(again):
            ping(net.client_ns, server.tunnel_ipv4, count=1)


def test_sigterm_sends_exit_and_leaves_nothing_behind(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn")
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
    with started(server), started(client):  # server first: no refused first try
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        mark = client.log_size()
        assert server.stop() == 0
        client.wait_for_log(r"EXIT|remote-exit|restart", timeout=10, since=mark)
        assert "tun0" not in net.server_ns.run(["ip", "-br", "link"]).stdout
        assert pids(net.server_ns) == []


def test_client_exit_notification_removes_the_client(lab) -> None:
    net = underlay(lab, 6)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt-v2", proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn")
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr,
                           extra=["explicit-exit-notify 1"])
    with started(server), started(client):  # server first: no refused first try
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        mark = server.log_size()
        client.stop()
        server.wait_for_log(r"SIGTERM\[soft,remote-exit\] received, client-instance exiting",
                            timeout=10, since=mark)


GARBAGE = """
import os, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for first in range(256):
    for size in (1, 9, 14, 26, 60, 200, 1400):
        s.sendto(bytes([first]) + os.urandom(size - 1), ("10.1.0.1", 1194))
"""


@pytest.mark.parametrize("wrapping", ["none", "tls-auth", "tls-crypt-v2"])
def test_garbage_datagrams_are_dropped_and_the_server_keeps_serving(lab, wrapping) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), wrapping=wrapping, proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn")
    with started(server):
        net.client_ns.run([sys.executable, "-c", GARBAGE])
        client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
        with started(client):
            ping(net.client_ns, server.tunnel_ipv4, count=2)
        assert server.running
        assert "Traceback" not in server.log() and "internal error" not in server.log()


def test_sigkill_leaves_no_worker_and_no_tun(lab) -> None:
    net = underlay(lab, 4)
    server = OpenVPNServer(net.server_ns, TunnelSpec(PKI(), proto=net.proto), program="xdp-ovpn")
    with started(server):
        kill(server)
        # The data-plane worker sees its command socket close and exits; the TUN goes with it.
        assert lab.wait_for(lambda: pids(net.server_ns) == [], timeout=10)
        assert lab.wait_for(lambda: "tun0" not in links(net.server_ns), timeout=10)
