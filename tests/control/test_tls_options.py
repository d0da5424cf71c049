"""TLS policy and CRL on an xdp-ovpn server against real openvpn 2.6 clients:
tls-ciphersuites / tls-cipher refuse a client that offers only excluded suites with a
clear line, and a certificate revoked in the crl-verify file while the server runs is
refused at its next connection."""

from __future__ import annotations

import pytest

from tests.support.interop import ping, underlay
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]


TLS13 = "tls-ciphersuites TLS_CHACHA20_POLY1305_SHA256"
TLS12 = "tls-cipher ECDHE-ECDSA-CHACHA20-POLY1305"
POLICIES = [
    ([TLS13], ["tls-ciphersuites TLS_AES_256_GCM_SHA384"], [TLS13]),
    ([TLS12], ["tls-version-max 1.2", "tls-cipher ECDHE-ECDSA-AES256-GCM-SHA384"],
     ["tls-version-max 1.2", TLS12]),
]


@pytest.mark.parametrize(("ours", "excluded", "allowed"), POLICIES, ids=["tls13", "tls12"])
def test_client_offering_only_excluded_suites_is_refused(lab, ours, excluded, allowed) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn", extra=ours)
    refused = OpenVPNClient(net.client_ns, server, remote=net.server_addr, extra=excluded)
    with started(server):
        refused.start(wait=False)
        try:
            server.wait_for_log(r"TLS Error: .*(no shared cipher|handshake failure)",
                                timeout=20)
            assert "Initialization Sequence Completed" not in refused.log()
        finally:
            refused.stop()
        with started(OpenVPNClient(net.client_ns, server, remote=net.server_addr,
                                   extra=allowed)):
            ping(net.client_ns, server.tunnel_ipv4, count=1)


def test_certificate_revoked_while_the_server_runs_is_refused_next_time(lab, tmp_path) -> None:
    net = underlay(lab, 4)
    pki = PKI()
    spec = TunnelSpec(pki, proto=net.proto)
    crl = tmp_path / "crl.pem"
    crl.write_bytes(pki.crl_pem())
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn",
                           extra=[f"crl-verify {crl}"])
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
    with started(server):
        with started(client):
            ping(net.client_ns, server.tunnel_ipv4, count=1)
        pki.revoke(pki.issued["client"])
        crl.write_bytes(pki.crl_pem())
        mark = server.log_size()
        again = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
        again.start(wait=False)
        try:
            server.wait_for_log(r"TLS Error: .*certificate revoked", timeout=20, since=mark)
            assert "Initialization Sequence Completed" not in again.log()
        finally:
            again.stop()
