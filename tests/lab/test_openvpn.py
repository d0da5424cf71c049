"""The interop harness: real openvpn 2.6 servers, clients and p2p peers in namespaces.

Each test brings a tunnel up between two openvpn processes and pings through
it, proving the config texts and the harness that every interop test builds on.
The same texts must parse with our config parser, so either side can be swapped.
"""

from __future__ import annotations

import pytest

from xdp_ovpn.config import Role, Wrapping, parse_text
from xdp_ovpn.lab.openvpn import (
    WRAPPINGS,
    Endpoint,
    OpenVPNClient,
    OpenVPNError,
    OpenVPNPeer,
    OpenVPNServer,
    TunnelSpec,
    started,
)
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]

UNDERLAY4 = ("10.1.0.1/24", "10.1.0.2/24")
UNDERLAY6 = ("fd00:1::1/64", "fd00:1::2/64")


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


def two_hosts(lab):
    a, b = lab.add_namespace("srv"), lab.add_namespace("cli")
    lab.link(a, b, addrs=UNDERLAY4, extra_addrs=[UNDERLAY6])
    return a, b


def ping(ns, address: str) -> None:
    ns.run(["ping", "-c", "1", "-W", "2", address])


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_server_and_client_tunnel_carries_ipv4_and_ipv6(lab, pki, wrapping):
    a, b = two_hosts(lab)
    spec = TunnelSpec(pki, wrapping=wrapping)
    with OpenVPNServer(a, spec) as server, OpenVPNClient(b, server, remote="10.1.0.1") as client:
        assert str(client.tun_ipv4()) == "10.8.0.2/24"
        assert str(client.tun_ipv6()) == "fd00:8::1000/64"
        ping(b, server.tunnel_ipv4)
        ping(b, server.tunnel_ipv6)
        assert "Data Channel: cipher 'AES-256-GCM'" in client.log()


def test_ipv6_underlay_and_chacha(lab, pki):
    a, b = two_hosts(lab)
    spec = TunnelSpec(pki, wrapping="tls-crypt", proto="udp6", cipher="CHACHA20-POLY1305")
    with OpenVPNServer(a, spec) as server, OpenVPNClient(b, server, remote="fd00:1::1") as client:
        ping(a, "10.8.0.2")
        assert "cipher 'CHACHA20-POLY1305'" in client.log()


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_p2p_tls_peers(lab, pki, wrapping):
    a, b = two_hosts(lab)
    spec = TunnelSpec(pki, wrapping=wrapping, network="10.9.0.0/24", network6="fd00:9::/64")
    left = OpenVPNPeer(a, spec, tls_server=True, remote="10.1.0.2")
    right = OpenVPNPeer(b, spec, tls_server=False, remote="10.1.0.1")
    with started(left, right):
        assert str(right.tun_ipv4().ip) == right.tunnel_ipv4 == "10.9.0.2"
        ping(b, left.tunnel_ipv4)
        ping(a, right.tunnel_ipv6)


def test_our_push_list_is_the_head_of_openvpns_push_reply(lab, pki):
    """Oracle for the config's server/keepalive expansion: openvpn pushes the same options,
    in the same order, before the per-client ones (ifconfig, peer-id, cipher, ...)."""
    a, b = two_hosts(lab)
    extra = ['push "route 10.50.0.0 255.255.0.0"']
    spec = TunnelSpec(pki, keepalive=(10, 60))
    server = OpenVPNServer(a, spec, extra=extra)
    ours = parse_text(server.config_text(), "server.conf").push
    with server, OpenVPNClient(b, server, remote="10.1.0.1") as client:
        reply = client.wait_for_log(r"PUSH_REPLY,([^']*)").group(1).split(",")
    assert reply[: len(ours)] == ours
    assert ours[-2:] == ["ping 10", "ping-restart 60"]


def test_wait_for_log_reports_exit_with_log_tail(lab, pki):
    a = lab.add_namespace("bad")
    broken = Endpoint(a, "dev tun0\nfrobnicate\n")
    with pytest.raises(OpenVPNError) as info:
        broken.start(timeout=10)
    message = str(info.value)
    assert message.startswith("openvpn in ") and "exited with status 1; log tail:" in message
    assert "frobnicate" in message
    assert not broken.running
    assert "frobnicate" in broken.log()  # still readable after its directory is removed
    assert not broken.workdir.exists()


def test_wait_for_log_since_waits_for_new_lines(lab, pki):
    a, b = two_hosts(lab)
    with OpenVPNServer(a, pki) as server, OpenVPNClient(b, server, remote="10.1.0.1"):
        mark = server.log_size()
        with pytest.raises(OpenVPNError, match="did not log"):
            server.wait_for_log("Initialization Sequence Completed", timeout=0.3, since=mark)


# ------------------------------------------- the same texts are valid xdp-ovpn configs


@pytest.mark.parametrize("wrapping", WRAPPINGS)
def test_harness_configs_parse_as_xdp_ovpn_configs(pki, wrapping):
    spec = TunnelSpec(pki, wrapping=wrapping, proto="udp6")
    server = parse_text(spec.server_config(), "server.conf")
    assert server.role is Role.SERVER and server.wrapping is Wrapping(wrapping)
    assert server.proto == "udp6" and server.data_ciphers == ("AES-256-GCM",)
    client = parse_text(spec.client_config("fd00:1::1"), "client.conf")
    assert client.role is Role.CLIENT and client.wrapping is Wrapping(wrapping)
    assert client.remotes[0].host == "fd00:1::1"
    if wrapping == "tls-auth":
        assert (server.tls_wrap.direction, client.tls_wrap.direction) == (0, 1)
    for tls_server in (True, False):
        peer = parse_text(spec.p2p_config(tls_server, "10.1.0.9"), "p2p.conf")
        assert peer.role is Role.P2P and peer.tls_server is tls_server
