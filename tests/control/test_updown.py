"""The up/route-up/down environment: openvpn 2.6's names for the tunnel, its routes,
pushed dhcp-option (foreign_option_N) and dns (dns_*) options."""

from __future__ import annotations

from xdp_ovpn.control.netconfig import parse_settings
from xdp_ovpn.control.updown import dns_env, foreign_options, tunnel_env

PUSHED = ["route-gateway 10.8.0.1", "topology subnet", "ifconfig 10.8.0.2 255.255.255.0",
          "ifconfig-ipv6 fd00:8::1000/64 fd00:8::1", "route 10.99.0.0 255.255.0.0",
          "dhcp-option DNS 10.8.0.53", "dns search-domains a.example b.example",
          "dns server 5 address 10.8.0.54 [fd00:8::53]:5353", "dns server 1 address 10.8.0.55",
          "dns server 1 resolve-domains corp.example", "dns server 1 dnssec yes",
          "dhcp-option DOMAIN vpn.example"]


def test_tunnel_env_has_addresses_routes_and_foreign_options() -> None:
    env = tunnel_env(parse_settings(PUSHED), "tun0", 1500, foreign_options(PUSHED))
    assert {k: env[k] for k in ("dev", "tun_mtu", "ifconfig_local", "ifconfig_netmask",
                                "ifconfig_ipv6_local", "ifconfig_ipv6_netbits",
                                "ifconfig_ipv6_remote", "route_vpn_gateway")} == {
        "dev": "tun0", "tun_mtu": "1500", "ifconfig_local": "10.8.0.2",
        "ifconfig_netmask": "255.255.255.0", "ifconfig_ipv6_local": "fd00:8::1000",
        "ifconfig_ipv6_netbits": "64", "ifconfig_ipv6_remote": "fd00:8::1",
        "route_vpn_gateway": "10.8.0.1"}
    assert (env["route_network_1"], env["route_netmask_1"], env["route_gateway_1"]) == (
        "10.99.0.0", "255.255.0.0", "10.8.0.1")
    assert env["foreign_option_1"] == "dhcp-option DNS 10.8.0.53"
    assert env["foreign_option_2"] == "dhcp-option DOMAIN vpn.example"
    assert "foreign_option_3" not in env


def test_dns_options_numbered_by_priority_as_openvpn() -> None:
    assert dns_env(PUSHED) == {
        "dns_search_domain_1": "a.example",
        "dns_search_domain_2": "b.example",
        "dns_server_1_address_1": "10.8.0.55",
        "dns_server_1_resolve_domain_1": "corp.example",
        "dns_server_1_dnssec": "yes",
        "dns_server_2_address_1": "10.8.0.54",
        "dns_server_2_address_2": "fd00:8::53",
        "dns_server_2_port_2": "5353",
    }
