"""reneg-pkts / reneg-bytes against a real openvpn 2.6 peer, on the XDP data path: the
data plane's counters make the control plane renegotiate under traffic, a new key-id comes
in, and the tunnel carries traffic on it."""

from __future__ import annotations

import pytest
from test_interop_xdp import use_xdp

from tests.support.interop import iperf3, ping, redirected, underlay
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn, pytest.mark.bpf]

KEY_ID = r"Data Channel: cipher '[^']+', peer-id \d+, key-id {}"


def test_reneg_pkts_on_an_xdp_server_renegotiates_under_traffic(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    server = use_xdp(OpenVPNServer(net.server_ns, spec, program="xdp-ovpn",
                                   extra=["reneg-pkts 1000"]))
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
    with started(server), started(client):
        server.wait_for_log(r"Data path: xdp")
        server.wait_for_log(KEY_ID.format(0))
        ping(net.client_ns, server.tunnel_ipv4)
        assert "key-id 1" not in server.log()  # a few pings are far from 1000 packets
        net.client_ns.run(["ping", "-f", "-c", "3000", "-W", "1", server.tunnel_ipv4],
                          timeout=60)
        server.wait_for_log(KEY_ID.format(1))
        ping(net.client_ns, server.tunnel_ipv4)  # on the new key
        assert redirected(net.server_ns) > 3000


def test_reneg_bytes_on_an_xdp_client_renegotiates_under_traffic(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec)
    client = use_xdp(OpenVPNClient(net.client_ns, server, remote=net.server_addr,
                                   program="xdp-ovpn", extra=["reneg-bytes 1000000"]))
    with started(server), started(client):
        client.wait_for_log(r"Data path: xdp")
        client.wait_for_log(KEY_ID.format(0))
        iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)  # 4 MB
        client.wait_for_log(KEY_ID.format(1))
        ping(net.client_ns, server.tunnel_ipv4)
        iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
        assert redirected(net.client_ns) > 200
