"""The interop suite again with `--data-path xdp`: xdp-ovpn's AF_XDP data path against
Debian's openvpn 2.6, both ways; the classifier's counters prove DATA_V2 took XDP.

Same matrix as test_interop.py (representative cases by default, the full product marked
slow), plus TLS p2p both ways.
"""

from __future__ import annotations

import re

import pytest
from test_interop import MATRIX, _tunnel

from tests.support.interop import iperf3, p2p_with_openvpn, ping, redirected, underlay
from xdp_ovpn.lab.openvpn import Endpoint, OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn, pytest.mark.bpf]


def use_xdp(endpoint: Endpoint) -> Endpoint:
    base = endpoint.command
    endpoint.command = lambda: [*base(), "--data-path", "xdp"]  # type: ignore[method-assign]
    return endpoint


def _check(lab, net, server, client, ours) -> None:
    ours.wait_for_log(r"Data path: xdp")
    ping(net.client_ns, server.tunnel_ipv4)
    ping(net.server_ns, str(client.tun_ipv4().ip))
    ping(net.client_ns, server.tunnel_ipv6)
    ping(net.server_ns, str(client.tun_ipv6().ip))
    iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
    ns = net.server_ns if ours is server else net.client_ns
    assert redirected(ns) > 200  # 4 MB of TCP data or its ACKs, plus the pings


@pytest.mark.parametrize(("wrapping", "cipher", "derivation", "family"), MATRIX)
def test_openvpn_client_to_xdp_server(lab, wrapping, cipher, derivation, family) -> None:
    net, server, client = _tunnel(lab, wrapping, cipher, derivation, family, "server")
    use_xdp(server)
    with started(server), started(client):
        _check(lab, net, server, client, server)


@pytest.mark.parametrize(("wrapping", "cipher", "derivation", "family"), MATRIX)
def test_xdp_client_to_openvpn_server(lab, wrapping, cipher, derivation, family) -> None:
    net, server, client = _tunnel(lab, wrapping, cipher, derivation, family, "client")
    use_xdp(client)
    with started(server), started(client):
        _check(lab, net, server, client, client)


@pytest.mark.parametrize("xdp_is_tls_server", [True, False], ids=["xdp-server", "xdp-client"])
def test_tls_p2p_with_openvpn_over_xdp(lab, xdp_is_tls_server: bool) -> None:
    net, server, client = p2p_with_openvpn(lab, xdp_is_tls_server)
    ours = server if xdp_is_tls_server else client
    use_xdp(ours)
    with started(server, client):
        ours.wait_for_log(r"Data path: xdp")
        ping(net.client_ns, server.tunnel_ipv4)
        ping(net.server_ns, client.tunnel_ipv4)
        out = iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
        assert re.search(r"receiver", out)
        assert redirected(net.server_ns if xdp_is_tls_server else net.client_ns) > 200



# (RX queues allocated, in use): None = the kernel's choice, as `ip link add` makes it.
SHAPES = {"plain-veth": (None, None), "2-in-use": (2, None), "4-allocated-1-in-use": (4, 1)}


@pytest.mark.parametrize("shape", SHAPES)
def test_xdp_server_engages_on_the_veths_users_make(lab, tmp_path, shape: str) -> None:
    net = underlay(lab, 4, *SHAPES[shape])
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    status = tmp_path / "status.txt"
    server = use_xdp(OpenVPNServer(net.server_ns, spec, program="xdp-ovpn",
                                   extra=[f"status {status} 1", "status-version 2"]))
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
    with started(server), started(client):
        server.wait_for_log(r"Data path: xdp")
        ping(net.client_ns, server.tunnel_ipv4)
        iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
        assert redirected(net.server_ns) > 200
        assert lab.wait_for(lambda: "CLIENT_LIST,client" in status.read_text(), timeout=5)
        log = server.log()
    assert "WARNING" not in log, log
    assert "GLOBAL_STATS,dco_enabled,1" in status.read_text()


def test_xdp_interface_and_mode_choose_where_xdp_goes_and_a_refusal_is_skipped(lab) -> None:
    net = underlay(lab, 4)
    ns = net.server_ns
    for name, cidr in (("xobr0", "10.2.0.1/24"), ("xobr1", "10.3.0.1/24")):
        ns.run(["ip", "link", "add", name, "type", "bridge"])
        ns.run(["ip", "link", "set", name, "up"])
        ns.add_address(name, cidr)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    # The config names veth0 and native mode; the command line adds the bridge, which has
    # no native XDP: skipped, loudly. The other bridge is named nowhere: left alone.
    server = use_xdp(OpenVPNServer(ns, spec, program="xdp-ovpn",
                                   extra=["xdp-interface veth0", "xdp-mode native"]))
    base = server.command
    server.command = lambda: [*base(), "--xdp-interface", "xobr0"]  # type: ignore[method-assign]
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
    with started(server), started(client):
        server.wait_for_log(r"XDP classifier attached to veth0 \(native, 1 RX queue")
        server.wait_for_log(r"WARNING: XDP skipped on xobr0: .*native")
        server.wait_for_log(r"Data path: xdp \(AF_XDP ingress on veth0,")
        ping(net.client_ns, server.tunnel_ipv4)
        iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
        assert redirected(ns) > 200
        for name in ("xobr0", "xobr1"):
            assert "xdp" not in ns.run(["ip", "link", "show", name]).stdout
