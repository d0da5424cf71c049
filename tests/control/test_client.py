"""xdp-ovpn as a client of a real openvpn 2.6 server: pushed network, reconnect, shutdown."""

from __future__ import annotations

import pytest

from tests.support.interop import kill, pids, ping, routes, underlay
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]

PUSHES = ['push "route 10.99.0.0 255.255.0.0"', 'push "redirect-gateway def1"',
          'push "route-ipv6 fd99::/48"']


def test_pushed_routes_and_redirect_gateway_are_applied_then_removed(lab) -> None:
    net = underlay(lab, 4)
    # A default route through a gateway on the underlay, as a real client host has.
    net.client_ns.add_route("default", via=net.server_addr)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, extra=PUSHES)
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn")
    with started(server), started(client):  # server first: no refused first try
        table = routes(net.client_ns)
        assert "0.0.0.0/1 via 10.8.0.1 dev tun0" in table
        assert "128.0.0.0/1 via 10.8.0.1 dev tun0" in table
        assert "10.99.0.0/16 via 10.8.0.1 dev tun0" in table
        assert "fd99::/48 dev tun0" in routes(net.client_ns, 6)
        ping(net.client_ns, server.tunnel_ipv4)
        mark = server.log_size()
        assert client.stop() == 0
        # openvpn's server saw our EXIT rather than waiting for ping-restart.
        server.wait_for_log(r"remote-exit|client-instance exiting", timeout=10, since=mark)
    table = routes(net.client_ns)
    assert "tun0" not in table and "10.99.0.0" not in table and "0.0.0.0/1" not in table
    assert "tun0" not in net.client_ns.run(["ip", "-br", "link"]).stdout
    assert pids(net.client_ns) == []


def test_client_reconnects_after_the_server_restarts(lab) -> None:
    net = underlay(lab, 6)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt-v2", proto=net.proto, keepalive=(1, 3))
    server = OpenVPNServer(net.server_ns, spec)
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn")
    with started(server), started(client):  # server first: no refused first try
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        mark = client.log_size()
        kill(server)
        client.wait_for_log(r"Inactivity timeout \(--ping-restart\)", timeout=15, since=mark)
        restarted = OpenVPNServer(net.server_ns, spec)
        with started(restarted):
            client.wait_for_log("Initialization Sequence Completed", timeout=30, since=mark)
            ping(net.client_ns, restarted.tunnel_ipv4)
            ping(net.client_ns, restarted.tunnel_ipv6)


def test_client_follows_a_server_pushed_restart(lab) -> None:
    net = underlay(lab, 4)
    # While the old server lingers it may still answer a handshake it will never finish:
    # ping-restart (3 s here) gets the client out of that, as it would get openvpn out.
    spec = TunnelSpec(PKI(), proto=net.proto, keepalive=(1, 3))
    server = OpenVPNServer(net.server_ns, spec, extra=["explicit-exit-notify 1"])
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn")
    with started(server), started(client):  # server first: no refused first try
        mark = client.log_size()
        server.stop()  # explicit-exit-notify: the server tells its clients to RESTART
        client.wait_for_log(r"SIGUSR1\[soft,server-pushed-connection-reset\]", timeout=10,
                            since=mark)
        restarted = OpenVPNServer(net.server_ns, spec, extra=["explicit-exit-notify 1"])
        with started(restarted):
            client.wait_for_log("Initialization Sequence Completed", timeout=30, since=mark)
            ping(net.client_ns, restarted.tunnel_ipv4)
