"""Options: addresses, pools, routes, push, and the timers."""

from __future__ import annotations

import ipaddress

from xdp_ovpn.config.lexer import Directive
from xdp_ovpn.config.model import ConfigError, Route
from xdp_ovpn.config.registry import NOT_YET, Parser, handles, int_arg
from xdp_ovpn.loader.maps import ControlLimits

# ---------------------------------------------------------------- addressing


def _ipv4(d: Directive, value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not an IPv4 address", d.name, d.where) from None


def _ipv4_net(d: Directive, addr: str, mask: str) -> ipaddress.IPv4Network:
    _ipv4(d, addr)
    _ipv4(d, mask)
    try:
        return ipaddress.IPv4Network(f"{addr}/{mask}")
    except ValueError as exc:
        raise ConfigError(f"bad network {addr} {mask}: {exc}", d.name, d.where) from None


def _ipv6_iface(d: Directive, value: str) -> ipaddress.IPv6Interface:
    try:
        return ipaddress.IPv6Interface(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not an IPv6 address/bits", d.name, d.where) from None


@handles("ifconfig", min_args=2, max_args=2, fields=("ifconfig",))
def _ifconfig(p: Parser, d: Directive) -> None:
    local, other = (str(_ipv4(d, a)) for a in d.args)
    p.cfg.ifconfig = (local, other)


@handles("ifconfig-ipv6", min_args=2, max_args=2, fields=("ifconfig_ipv6",))
def _ifconfig_ipv6(p: Parser, d: Directive) -> None:
    local = _ipv6_iface(d, d.args[0] if "/" in d.args[0] else d.args[0] + "/64")
    if not 64 <= local.network.prefixlen <= 124:
        raise ConfigError("/netbits must be between 64 and 124", d.name, d.where)
    remote = _ipv6_iface(d, d.args[1]).ip
    p.cfg.ifconfig_ipv6 = (local, remote)


@handles("server", min_args=2, max_args=3, fields=("role", "ifconfig", "ifconfig_pool", "push"))
def _server(p: Parser, d: Directive) -> None:
    net = _ipv4_net(d, d.args[0], d.args[1])
    if len(d.args) > 2 and d.args[2] != "nopool":
        raise ConfigError(f"third argument must be 'nopool', not {d.args[2]!r}", d.name, d.where)
    if net.prefixlen > 29:
        raise ConfigError(
            "with dev tun the subnet must be /29 (255.255.255.248) or larger", d.name, d.where
        )
    if net.prefixlen < 16:
        raise ConfigError("the subnet must be /16 (255.255.0.0) or smaller", d.name, d.where)
    p.cfg.server = net
    p.cfg.server_nopool = len(d.args) > 2


@handles(
    "server-ipv6",
    min_args=1,
    max_args=1,
    fields=("role", "ifconfig_ipv6", "ifconfig_ipv6_pool", "push"),
)
def _server_ipv6(p: Parser, d: Directive) -> None:
    iface = _ipv6_iface(d, d.args[0])
    if not 64 <= iface.network.prefixlen <= 124:
        raise ConfigError("the network must be between /64 and /124", d.name, d.where)
    p.cfg.server_ipv6 = iface.network


@handles("ifconfig-pool", min_args=2, max_args=3, fields=("ifconfig_pool", "ifconfig_pool_netmask"))
def _ifconfig_pool(p: Parser, d: Directive) -> None:
    start, end = _ipv4(d, d.args[0]), _ipv4(d, d.args[1])
    if end < start:
        raise ConfigError("the pool ends before it starts", d.name, d.where)
    p.cfg.ifconfig_pool = (start, end)
    if len(d.args) > 2:
        p.cfg.ifconfig_pool_netmask = _ipv4(d, d.args[2])


@handles(
    "ifconfig-ipv6-pool",
    min_args=1,
    max_args=1,
    fields=("ifconfig_ipv6_pool", "ifconfig_ipv6_pool_base"),
)
def _ifconfig_ipv6_pool(p: Parser, d: Directive) -> None:
    iface = _ipv6_iface(d, d.args[0])
    if not 64 <= iface.network.prefixlen <= 124:
        raise ConfigError("the network must be between /64 and /124", d.name, d.where)
    p.cfg.ifconfig_ipv6_pool = iface.network
    p.cfg.ifconfig_ipv6_pool_base = iface.ip


@handles(
    "ifconfig-pool-persist",
    min_args=1,
    max_args=2,
    fields=("ifconfig_pool_persist", "ifconfig_pool_persist_seconds"),
)
def _pool_persist(p: Parser, d: Directive) -> None:
    p.cfg.ifconfig_pool_persist = p.path(d.args[0])
    if len(d.args) > 1:
        p.cfg.ifconfig_pool_persist_seconds = int_arg(d, d.args[1])


@handles("route", min_args=1, max_args=4, fields=("routes",))
def _route(p: Parser, d: Directive) -> None:
    mask = d.args[1] if len(d.args) > 1 and d.args[1] != "default" else "255.255.255.255"
    gateway = d.args[2] if len(d.args) > 2 and d.args[2] != "default" else None
    metric = int_arg(d, d.args[3]) if len(d.args) > 3 else None
    net = _ipv4_net(d, d.args[0], mask)
    p.cfg.routes.append(Route(net, gateway, metric))


@handles("route-ipv6", min_args=1, max_args=3, fields=("routes_ipv6",))
def _route_ipv6(p: Parser, d: Directive) -> None:
    try:
        net = ipaddress.IPv6Network(d.args[0], strict=False)
    except ValueError:
        raise ConfigError(f"{d.args[0]!r} is not an IPv6 network", d.name, d.where) from None
    gateway = d.args[1] if len(d.args) > 1 else None
    metric = int_arg(d, d.args[2]) if len(d.args) > 2 else None
    p.cfg.routes_ipv6.append(Route(net, gateway, metric))


_REDIRECT_FLAGS = frozenset(
    {"local", "autolocal", "def1", "bypass-dhcp", "bypass-dns", "block-local", "ipv6", "!ipv4"}
)


@handles("redirect-gateway", min_args=0, max_args=8, fields=("redirect_gateway",))
def _redirect_gateway(p: Parser, d: Directive) -> None:
    for flag in d.args:
        if flag not in _REDIRECT_FLAGS:
            raise ConfigError(f"unknown flag {flag!r}", d.name, d.where)
    p.cfg.redirect_gateway = d.args


_PULL_FILTER_ACTIONS = ("accept", "ignore", "reject")


@handles("pull-filter", min_args=2, max_args=2, fields=("pull_filters",))
def _pull_filter(p: Parser, d: Directive) -> None:
    if d.args[0] not in _PULL_FILTER_ACTIONS:
        raise ConfigError(
            f"action must be accept, ignore or reject, not {d.args[0]!r}", d.name, d.where
        )
    p.cfg.pull_filters.append((d.args[0], d.args[1]))


@handles("push", min_args=1, max_args=1, fields=("push",))
def _push(p: Parser, d: Directive) -> None:
    p.cfg.push.append(d.args[0])


# ---------------------------------------------------------------- timers


@handles("keepalive", min_args=2, max_args=2, fields=("ping", "ping_restart"))
def _keepalive(p: Parser, d: Directive) -> None:
    interval, timeout = int_arg(d, d.args[0], 1), int_arg(d, d.args[1], 1)
    if interval * 2 > timeout:
        raise ConfigError(
            f"the timeout ({timeout}) must be at least twice the interval ({interval})",
            d.name,
            d.where,
        )
    p.cfg.keepalive = (interval, timeout)


@handles("reneg-sec", min_args=1, max_args=2, fields=("reneg_sec",))
def _reneg_sec(p: Parser, d: Directive) -> None:
    p.cfg.reneg_sec = int_arg(d, d.args[0])
    if len(d.args) > 1:
        raise ConfigError(
            f"the second argument (a random lower bound) is {NOT_YET}; give one value",
            d.name,
            d.where,
        )


@handles("replay-window", min_args=1, max_args=2, fields=("replay_window", "replay_time"))
def _replay_window(p: Parser, d: Directive) -> None:
    # Bounds from openvpn's packet_id.h (MIN/MAX_SEQ_BACKTRACK, MIN/MAX_TIME_BACKTRACK).
    p.cfg.replay_window = int_arg(d, d.args[0], 0, 65536)
    if len(d.args) > 1:
        p.cfg.replay_time = int_arg(d, d.args[1], 0, 600)


@handles("xdp-control-limit", min_args=1, max_args=4, fields=("xdp_control_limit",))
def _xdp_control_limit(p: Parser, d: Directive) -> None:
    """xdp-ovpn's own: SOURCE_RATE SOURCE_BURST GLOBAL_RATE GLOBAL_BURST, or `off`."""
    if d.args == ("off",):
        p.cfg.xdp_control_limit = None
        return
    if len(d.args) != 4:
        raise ConfigError("expected SOURCE_RATE SOURCE_BURST GLOBAL_RATE GLOBAL_BURST or off",
                          d.name, d.where)
    try:
        p.cfg.xdp_control_limit = ControlLimits(*(int_arg(d, arg) for arg in d.args))
    except ValueError as exc:
        raise ConfigError(str(exc), d.name, d.where) from None
