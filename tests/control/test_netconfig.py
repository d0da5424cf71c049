"""Pushed and local network options folded into tunnel settings."""

from __future__ import annotations

import pytest

from xdp_ovpn.control.netconfig import NetConfigError, TunnelSettings, parse_settings

PUSH_REPLY = [
    "tun-ipv6", "route-gateway 10.8.0.1", "topology subnet", "ping 10", "ping-restart 60",
    "ifconfig 10.8.0.2 255.255.255.0", "ifconfig-ipv6 fd00:8::1000/64 fd00:8::1",
    "route 10.99.0.0 255.255.0.0", "route 192.0.2.7", "route-ipv6 fd99::/48",
    "redirect-gateway def1 bypass-dhcp", "peer-id 0", "cipher AES-256-GCM", "tun-mtu 1400",
]


def test_push_reply_of_a_subnet_server() -> None:
    s = parse_settings(PUSH_REPLY)
    assert (s.topology, s.ipv4, s.ipv4_prefixlen, s.ipv4_peer) == ("subnet", "10.8.0.2", 24, None)
    assert s.ipv4_gateway == "10.8.0.1"
    assert s.ipv6 == "fd00:8::1000/64" and s.ipv6_remote == "fd00:8::1"
    assert s.routes == [("10.99.0.0/16", None), ("192.0.2.7/32", None)]
    assert s.routes6 == [("fd99::/48", None)]
    assert s.redirect_v4 and not s.redirect_v6
    assert (s.ping, s.ping_restart, s.tun_mtu) == (10, 60, 1400)


def test_net30_ifconfig_is_local_and_remote() -> None:
    s = parse_settings(["ifconfig 10.8.0.6 10.8.0.5"], TunnelSettings(topology="net30"))
    assert (s.ipv4_prefixlen, s.ipv4_peer, s.ipv4_gateway) == (32, "10.8.0.5", "10.8.0.5")


def test_redirect_gateway_ipv6_flags() -> None:
    s = parse_settings(["redirect-gateway ipv6 !ipv4"])
    assert s.redirect_v6 and not s.redirect_v4


@pytest.mark.parametrize("line", ["route 10.0.0.0 255.0.0.300", "ifconfig 10.8.0.2", "ping x"])
def test_malformed_option_is_a_typed_error(line: str) -> None:
    with pytest.raises(NetConfigError, match="bad"):
        parse_settings([line])
