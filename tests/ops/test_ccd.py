"""client-config-dir entries: lookup order, the supported options, one-line errors."""

from __future__ import annotations

import ipaddress

from xdp_ovpn.control.ccd import ClientConfig, entry_name, lookup, parse

ENTRY = """\
# a typical gateway client
ifconfig-push 10.8.0.50 255.255.255.0
ifconfig-ipv6-push fd00:8::50/64 fd00:8::1
iroute 192.168.50.0 255.255.255.0
iroute 10.77.0.5
iroute-ipv6 fd00:50::/64
push "route 192.168.60.0 255.255.255.0"
push-remove dhcp-option
"""


def test_typical_entry_parses():
    cfg = parse(ENTRY, "ccd/gw1")
    assert cfg.errors == []
    assert not cfg.disable
    assert cfg.ifconfig_push == (ipaddress.IPv4Address("10.8.0.50"),
                                 ipaddress.IPv4Address("255.255.255.0"))
    assert str(cfg.ifconfig_ipv6_push[0]) == "fd00:8::50/64"
    assert cfg.all_iroutes == ["192.168.50.0/24", "10.77.0.5/32", "fd00:50::/64"]
    base = ["route-gateway 10.8.0.1", "dhcp-option DNS 10.8.0.1"]
    assert cfg.push_options(base) == [
        "route-gateway 10.8.0.1", "route 192.168.60.0 255.255.255.0"]


def test_push_reset_clears_what_came_before_in_order():
    cfg = parse('push "a 1"\npush-reset\npush "b 2"\n')
    assert cfg.push_options(["server 1"]) == ["b 2"]


def test_disable_survives_bad_lines_and_errors_are_one_line_each():
    cfg = parse("iroute 300.1.1.1\nfoo bar\nifconfig-push 10.0.0.1\ndisable\n", "ccd/x")
    assert cfg.disable
    assert cfg.errors == [
        "ccd/x:1: iroute: '300.1.1.1' is not an IPv4 address",
        "ccd/x:2: foo: not allowed in a client-config-dir file (or not supported)",
        "ccd/x:3: ifconfig-push: takes 2 to 3 arguments, got 1",
    ]
    assert all("\n" not in e for e in cfg.errors)


def test_unclosed_quote_is_one_error():
    cfg = parse('push "route 1.2.3.0 255.255.255.0\n')
    assert len(cfg.errors) == 1 and "no closing quotation" in cfg.errors[0]


def test_lookup_prefers_the_common_name_then_default(tmp_path):
    (tmp_path / "alice").write_text("iroute 192.168.1.0 255.255.255.0\n")
    (tmp_path / "DEFAULT").write_text("push-reset\n")
    assert lookup(tmp_path, "alice").all_iroutes == ["192.168.1.0/24"]
    assert lookup(tmp_path, "bob").push_ops == [("reset", "")]
    (tmp_path / "DEFAULT").unlink()
    assert lookup(tmp_path, "bob") is None


def test_unsafe_common_names_never_name_a_file(tmp_path):
    (tmp_path / "DEFAULT").write_text("disable\n")
    for cn in ("..", ".", "../etc/passwd", "a/b", "x y", ""):
        assert entry_name(cn) is None
        assert lookup(tmp_path, cn).disable  # falls back to DEFAULT only
    assert entry_name("user@example.org") == "user@example.org"


def test_client_connect_file_applies_on_top_of_the_ccd_entry():
    ccd = parse("ifconfig-push 10.8.0.50 255.255.255.0\niroute 192.168.50.0 255.255.255.0\n"
                'push "a 1"\n', "ccd/gw1")
    dyn = parse('ifconfig-push 10.8.0.60 255.255.255.0\npush-reset\npush "b 2"\n', "cc.tmp")
    both = ccd.update(dyn)
    assert str(both.ifconfig_push[0]) == "10.8.0.60"
    assert both.all_iroutes == ["192.168.50.0/24"]
    assert both.push_options(["base"]) == ["b 2"]
    assert ClientConfig().update(dyn).source == "cc.tmp"
