"""xdp-ovpn against Debian's real openvpn 2.6, both ways, in lab namespaces.

The default run covers every wrapping, cipher, key derivation and underlay family at
least once in each direction; the full product is marked slow.
"""

from __future__ import annotations

import itertools

import pytest

from tests.support.interop import iperf3, p2p_with_openvpn, ping, underlay, use_prf
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]

WRAPPINGS = ("none", "tls-auth", "tls-crypt", "tls-crypt-v2")
CIPHERS = ("AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305")

# (wrapping, cipher, derivation, underlay family): every value of each axis appears.
REPRESENTATIVE = [
    ("none", "AES-256-GCM", "ekm", 4),
    ("tls-auth", "AES-128-GCM", "prf", 6),
    ("tls-crypt", "CHACHA20-POLY1305", "ekm", 6),
    ("tls-crypt-v2", "AES-256-GCM", "prf", 4),
]
FULL = [
    case
    for case in itertools.product(WRAPPINGS, CIPHERS, ("ekm", "prf"), (4, 6))
    if case not in REPRESENTATIVE
]
MATRIX = [pytest.param(*case, id="-".join(map(str, case))) for case in REPRESENTATIVE] + [
    pytest.param(*case, id="-".join(map(str, case)), marks=pytest.mark.slow) for case in FULL
]


def _tunnel(lab, wrapping: str, cipher: str, derivation: str, family: int, xdp_side: str):
    net = underlay(lab, family)
    spec = TunnelSpec(PKI(), wrapping=wrapping, cipher=cipher, proto=net.proto)
    server_program = "xdp-ovpn" if xdp_side == "server" else "openvpn"
    client_program = "xdp-ovpn" if xdp_side == "client" else "openvpn"
    server = OpenVPNServer(net.server_ns, spec, program=server_program)
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program=client_program)
    if derivation == "prf":
        use_prf(server if xdp_side == "server" else client)
    return net, server, client


def _check_tunnel(lab, net, server, client, derivation: str) -> None:
    ours = server if server.program == "xdp-ovpn" else client
    ours.wait_for_log(r"Data path: (socket|xdp)")  # auto says which one it took
    ours.wait_for_log("Data Channel: cipher .*" + ("EKM" if derivation == "ekm" else "PRF"))
    client4, client6 = client.tun_ipv4(), client.tun_ipv6()
    ping(net.client_ns, server.tunnel_ipv4)
    ping(net.server_ns, str(client4.ip))
    ping(net.client_ns, server.tunnel_ipv6)
    ping(net.server_ns, str(client6.ip))
    iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)


@pytest.mark.parametrize(("wrapping", "cipher", "derivation", "family"), MATRIX)
def test_openvpn_client_to_xdp_ovpn_server(lab, wrapping, cipher, derivation, family) -> None:
    net, server, client = _tunnel(lab, wrapping, cipher, derivation, family, "server")
    with started(server), started(client):  # server first: no refused first try
        _check_tunnel(lab, net, server, client, derivation)


@pytest.mark.parametrize(("wrapping", "cipher", "derivation", "family"), MATRIX)
def test_xdp_ovpn_client_to_openvpn_server(lab, wrapping, cipher, derivation, family) -> None:
    net, server, client = _tunnel(lab, wrapping, cipher, derivation, family, "client")
    with started(server), started(client):
        _check_tunnel(lab, net, server, client, derivation)


@pytest.mark.parametrize("xdp_is_tls_server", [True, False], ids=["xdp-server", "xdp-client"])
def test_tls_p2p_with_openvpn(lab, xdp_is_tls_server: bool) -> None:
    net, server, client = p2p_with_openvpn(lab, xdp_is_tls_server)
    with started(server, client):
        ping(net.client_ns, server.tunnel_ipv4)
        ping(net.server_ns, client.tunnel_ipv4)
        ping(net.client_ns, server.tunnel_ipv6)
        iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
