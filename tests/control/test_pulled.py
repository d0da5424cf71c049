"""What a pulling client keeps of PUSH_REPLY (pull-filter, route-nopull) and its own
route lines; remote-random's order."""

from __future__ import annotations

import asyncio

from xdp_ovpn.config import Config, Remote, Role, parse_text
from xdp_ovpn.control.client import Client
from xdp_ovpn.control.netconfig import own_route_lines, parse_settings
from xdp_ovpn.control.pulled import filter_pushed
from xdp_ovpn.control.sessionconfig import session_config
from xdp_ovpn.lab.pki import PKI

PUSHED = ["route-gateway 10.8.0.1", "topology subnet", "ifconfig 10.8.0.2 255.255.255.0",
          "route 10.99.0.0 255.255.0.0", "redirect-gateway def1",
          "dhcp-option DNS 10.8.0.53", "route-ipv6 fd99::/48", "ping 10"]


def test_pull_filter_first_match_decides_and_reject_stops() -> None:
    cfg = Config(role=Role.CLIENT)
    cfg.pull_filters = [("accept", "route 10.99."), ("ignore", "route"),
                        ("ignore", "dhcp-option")]
    pulled = filter_pushed(cfg, PUSHED)
    assert "route 10.99.0.0 255.255.0.0" in pulled.accepted
    assert pulled.ignored == ["route-gateway 10.8.0.1", "dhcp-option DNS 10.8.0.53",
                              "route-ipv6 fd99::/48"]
    cfg.pull_filters = [("reject", "redirect-gateway")]
    assert filter_pushed(cfg, PUSHED).rejected == "redirect-gateway def1"


def test_route_nopull_keeps_addresses_and_drops_routes_and_dns() -> None:
    cfg = Config(role=Role.CLIENT, route_nopull=True)
    pulled = filter_pushed(cfg, PUSHED)
    assert pulled.accepted == ["route-gateway 10.8.0.1", "topology subnet",
                               "ifconfig 10.8.0.2 255.255.255.0", "ping 10"]
    settings = parse_settings(pulled.accepted)
    assert settings.ipv4 == "10.8.0.2" and not settings.routes and not settings.redirect_v4


def test_client_own_routes_and_redirect_gateway_apply_on_top() -> None:
    pki = PKI()
    cred = pki.client("c")
    text = (f"client\nremote h\n<ca>\n{pki.ca_pem.decode()}</ca>\n"
            f"<cert>\n{cred.cert_pem.decode()}</cert>\n<key>\n{cred.key_pem.decode()}</key>\n"
            "route 192.0.2.0 255.255.255.0\nroute-ipv6 2001:db8::/32\n"
            "redirect-gateway def1\nroute-nopull\n")
    cfg = parse_text(text, "c.conf")
    lines = own_route_lines(cfg)
    assert lines == ["route 192.0.2.0 255.255.255.0", "route-ipv6 2001:db8::/32",
                     "redirect-gateway def1"]
    settings = parse_settings(filter_pushed(cfg, PUSHED).accepted + lines)
    assert settings.routes == [("192.0.2.0/24", None)] and settings.redirect_v4


def test_remote_random_shuffles_once_per_start() -> None:
    pki = PKI()
    cred = pki.client("c")
    remotes = "".join(f"remote 192.0.2.{n}\n" for n in range(1, 9))
    text = (f"client\n{remotes}remote-random\n<ca>\n{pki.ca_pem.decode()}</ca>\n"
            f"<cert>\n{cred.cert_pem.decode()}</cert>\n<key>\n{cred.key_pem.decode()}</key>\n")
    cfg = parse_text(text, "c.conf")
    loop = asyncio.new_event_loop()
    try:
        orders = [Client(cfg, session_config(cfg), None, None, loop).remotes  # type: ignore[arg-type]
                  for _ in range(5)]
    finally:
        loop.close()
    assert all(sorted(o, key=lambda r: r.host) == cfg.remotes for o in orders)
    assert any(o != cfg.remotes for o in orders)  # 5 shuffles of 8 all in order: 1 in 8!^5
    cfg.remote_random = False
    assert Client(cfg, session_config(cfg), None, None, None).remotes == [  # type: ignore[arg-type]
        Remote(f"192.0.2.{n}", 1194, "udp") for n in range(1, 9)]
