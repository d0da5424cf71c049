"""Server options with real openvpn 2.6 clients: ccd-exclusive refuses a client without
a client-config-dir entry; duplicate-cn lets two clients share a certificate;
ifconfig-ipv6-pool hands out IPv6 addresses; extra-certs sends an intermediate CA; up
and down run around the server's TUN."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from test_client_options import recorder

from tests.support.interop import ping, star, underlay
from xdp_ovpn.lab.openvpn import Endpoint, OpenVPNClient, OpenVPNServer, TunnelSpec, started
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


def test_ifconfig_ipv6_pool_gives_clients_addresses_from_it(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto, network6=None)  # no server-ipv6 helper
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn", extra=[
        "ifconfig-ipv6 fd00:9::1/64 fd00:9::2", "ifconfig-ipv6-pool fd00:9::1000/64",
        'push "tun-ipv6"'])
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
    with started(server), started(client):
        address = client.tun_ipv6()
        assert address is not None and str(address) == "fd00:9::1000/64"
        net.client_ns.run(["ping", "-6", "-c", "1", "-W", "3", "fd00:9::1"])


def _intermediate(root: PKI) -> tuple[PKI, bytes]:
    """A second CA, and its certificate re-issued by `root`: an intermediate CA."""
    inter = PKI("xdp-ovpn intermediate CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(inter.ca.cert.subject)
        .issuer_name(root.ca.cert.subject)
        .public_key(inter.ca.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(inter.ca.cert.not_valid_before_utc)
        .not_valid_after(inter.ca.cert.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(inter.ca.cert.extensions.get_extension_for_class(x509.KeyUsage).value,
                       critical=True)
        .sign(root.ca.key, hashes.SHA256())
    )
    return inter, cert.public_bytes(serialization.Encoding.PEM)


def test_extra_certs_send_the_intermediate_ca_to_clients(lab) -> None:
    net = underlay(lab, 4)
    root = PKI()
    inter, inter_pem = _intermediate(root)
    text = TunnelSpec(inter, proto=net.proto).server_config().replace(
        inter.ca_pem.decode(), root.ca_pem.decode())
    server = Endpoint(net.server_ns, text + f"<extra-certs>\n{inter_pem.decode()}</extra-certs>\n",
                      program="xdp-ovpn")
    client = OpenVPNClient(net.client_ns, TunnelSpec(root, proto=net.proto),
                           remote=net.server_addr)  # trusts the root only
    with started(server), started(client):
        ping(net.client_ns, "10.8.0.1", count=1)


def test_server_up_and_down_scripts_get_the_tunnel(lab, tmp_path) -> None:
    net = underlay(lab, 4)
    script, out = recorder(tmp_path)
    spec = TunnelSpec(PKI(), proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn",
                           extra=["script-security 2", f"up {script}", f"down {script}",
                                  "dhcp-option DNS 10.8.0.1"])
    with started(server):
        assert (out / "up.args").read_text().split() == [
            "tun0", "1500", "0", "10.8.0.1", "255.255.255.0", "init"]
        up = (out / "up.env").read_text().splitlines()
        assert "script_type=up" in up and "foreign_option_1=dhcp-option DNS 10.8.0.1" in up
        assert server.stop() == 0
    assert "script_type=down" in (out / "down.env").read_text().splitlines()
