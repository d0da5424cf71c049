"""Server options with real openvpn 2.6 clients: ccd-exclusive refuses a client without
a client-config-dir entry; duplicate-cn lets two clients share a certificate."""

from __future__ import annotations

import pytest
from interop import ping, star, underlay

from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]


def test_ccd_exclusive_refuses_clients_without_an_entry(lab, tmp_path) -> None:
    net = underlay(lab, 4)
    ccd = tmp_path / "ccd"
    ccd.mkdir()
    (ccd / "known").write_text("# an entry, even an empty one, lets the client in\n")
    spec = TunnelSpec(PKI(), proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn",
                           extra=[f"client-config-dir {ccd}", "ccd-exclusive"])
    stranger = OpenVPNClient(net.client_ns, server, remote=net.server_addr, cn="stranger")
    with started(server):
        stranger.start(wait=False)
        try:
            server.wait_for_log("no client-config-dir entry and ccd-exclusive is set",
                                timeout=20)
            assert "Initialization Sequence Completed" not in stranger.log()
        finally:
            stranger.stop()
        with started(OpenVPNClient(net.client_ns, server, remote=net.server_addr, cn="known")):
            ping(net.client_ns, server.tunnel_ipv4, count=1)


def test_duplicate_cn_keeps_both_clients_of_one_certificate(lab) -> None:
    hub, spokes = star(lab, 2)
    spec = TunnelSpec(PKI())
    server = OpenVPNServer(hub, spec, program="xdp-ovpn", extra=["duplicate-cn"])
    clients = [OpenVPNClient(ns, server, remote=addr, cn="same") for ns, addr in spokes]
    with started(server), started(*clients):
        addresses = {str(c.tun_ipv4().ip) for c in clients}
        assert len(addresses) == 2
        for ns, _ in spokes:  # both still connected: neither replaced the other
            ping(ns, server.tunnel_ipv4, count=1)
