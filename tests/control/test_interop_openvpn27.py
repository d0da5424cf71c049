"""xdp-ovpn against openvpn 2.7.8 (Debian sid, chrooted from the lab's cached root).

Both ends keep their default data-ciphers, so the tests also show what 2.7 picks. We do
not offer IV_PROTO_DATA_EPOCH, so 2.7 must fall back to the 2.6 data format: its log has
no "Epoch Data key" and its protocol-flags no aead-epoch.
"""

from __future__ import annotations

import re

import pytest
from interop import iperf3, ping, redirected, underlay
from test_interop_xdp import use_xdp

from xdp_ovpn.lab.openvpn import (
    Endpoint,
    OpenVPNClient,
    OpenVPNPeer,
    OpenVPNServer,
    TunnelSpec,
    started,
)
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn27]

DEFAULT_CIPHER = "AES-256-GCM"  # the head of both sides' default data-ciphers
# verb 4 (openvpn takes the last one) logs each data key: "Outgoing Data Channel: Cipher"
# for the 2.6 format, "Outgoing Epoch Data key N" for the epoch format.
VERBOSE = ("verb 4",)


def _spec(proto: str) -> TunnelSpec:
    return TunnelSpec(PKI(), wrapping="tls-crypt", cipher=None, proto=proto)


def _check_openvpn27_log(theirs: Endpoint) -> None:
    """2.7 says it runs openvpn 2.7, took the default cipher and the 2.6 data format."""
    log = theirs.log()
    assert "OpenVPN 2.7." in log
    assert f"Data Channel: cipher '{DEFAULT_CIPHER}'" in log or f"cipher={DEFAULT_CIPHER}" in log
    assert f"Outgoing Data Channel: Cipher '{DEFAULT_CIPHER}'" in log, log
    assert "Epoch Data key" not in log
    assert "aead-epoch" not in log


OURS = {"program": "xdp-ovpn"}
THEIRS = {"openvpn": "2.7", "extra": VERBOSE}


def _xdp_tunnel(lab, family: int, xdp_side: str) -> tuple:
    """xdp-ovpn on the XDP path on `xdp_side` ("server" or "client"), openvpn 2.7 opposite."""
    net = underlay(lab, family)
    spec = _spec(net.proto)
    ours_serves = xdp_side == "server"
    server = OpenVPNServer(net.server_ns, spec, **(OURS if ours_serves else THEIRS))
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr,
                           **(THEIRS if ours_serves else OURS))
    ours, theirs = (server, client) if ours_serves else (client, server)
    use_xdp(ours)
    return net, server, client, ours, theirs


def _check_xdp_tunnel(lab, net, server, client, ours, theirs) -> None:
    ours.wait_for_log(r"Data path: xdp")
    ours.wait_for_log(f"Data Channel: cipher '{DEFAULT_CIPHER}'")
    ping(net.client_ns, server.tunnel_ipv4)
    ping(net.server_ns, str(client.tun_ipv4().ip))
    ping(net.client_ns, server.tunnel_ipv6)
    iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
    assert redirected(ours.ns) > 200  # DATA_V2 took the XDP path
    _check_openvpn27_log(theirs)


@pytest.mark.bpf
def test_openvpn27_client_to_xdp_server(lab) -> None:
    net, server, client, ours, theirs = _xdp_tunnel(lab, 4, "server")
    with started(server), started(client):
        _check_xdp_tunnel(lab, net, server, client, ours, theirs)


@pytest.mark.bpf
def test_xdp_client_to_openvpn27_server(lab) -> None:
    net, server, client, ours, theirs = _xdp_tunnel(lab, 6, "client")
    with started(server), started(client):
        _check_xdp_tunnel(lab, net, server, client, ours, theirs)


def test_tls_p2p_with_openvpn27(lab) -> None:
    """2.6-style TLS p2p: 2.7 negotiates with our p2p NCP peer-info, without epoch."""
    net = underlay(lab, 4)
    spec = _spec(net.proto)
    server = OpenVPNPeer(net.server_ns, spec, tls_server=True, program="xdp-ovpn")
    client = OpenVPNPeer(net.client_ns, spec, tls_server=False, remote=net.server_addr,
                         **THEIRS)
    with started(server, client):
        ping(net.client_ns, server.tunnel_ipv4)
        ping(net.server_ns, client.tunnel_ipv4)
        assert re.search(r"epoch=0, cipher=" + DEFAULT_CIPHER, client.log()), client.log()
        _check_openvpn27_log(client)
