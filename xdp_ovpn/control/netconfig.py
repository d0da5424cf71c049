"""Tunnel network settings: parsed from a PUSH_REPLY or local options, applied to the TUN.

Covers what a DCO client applies: `ifconfig` (topology subnet or net30/p2p),
`ifconfig-ipv6`, `route`, `route-ipv6`, `route-gateway`, `redirect-gateway def1 [ipv6]`,
`tun-mtu`, and the pushed `ping` / `ping-restart` timers. Everything the TUN carries goes
with it when it is deleted; the one route outside it (redirect-gateway's host route to
the server through the old gateway) is tracked here and removed by `undo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from xdp_ovpn.config import Config, Role
from xdp_ovpn.dataplane.tun import Tun

DEF1_V4 = ("0.0.0.0/1", "128.0.0.0/1")
DEF1_V6 = ("::/3", "2000::/4", "3000::/4", "fc00::/7")  # openvpn's redirect-gateway ipv6


T = TypeVar("T")

# pyroute2's synchronous API runs an asyncio loop of its own, which cannot nest in ours:
# every netlink call (TUN creation, addresses, routes, deletion) goes to this one thread,
# in submission order.
_NETLINK = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")


def in_netlink_thread(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """Run fn(*args) on the netlink thread; await the result from the event loop."""
    return asyncio.wrap_future(_NETLINK.submit(fn, *args))


def run_in_netlink_thread(fn: Callable[[], T]) -> T:
    """Run fn on the netlink thread and wait for it (inline when already there). After
    `user` that thread alone kept capabilities: what needs them goes through here."""
    if threading.current_thread().name.startswith("netlink"):
        return fn()
    return _NETLINK.submit(fn).result()


class NetConfigError(Exception):
    """A pushed or configured network option is malformed: one line."""


@dataclass
class TunnelSettings:
    topology: str = "net30"
    ipv4: str | None = None
    ipv4_second: str | None = None  # netmask (subnet) or the remote end (net30, p2p)
    ipv6: str | None = None  # addr/len
    ipv6_remote: str | None = None
    route_gateway: str | None = None
    routes: list[tuple[str, str | None]] = field(default_factory=list)  # (cidr, gateway)
    routes6: list[tuple[str, str | None]] = field(default_factory=list)
    redirect_v4: bool = False
    redirect_v6: bool = False
    tun_mtu: int | None = None
    ping: int | None = None
    ping_restart: int | None = None
    sndbuf: int = 0  # pushed socket buffer sizes; 0 = not pushed
    rcvbuf: int = 0

    @property
    def ipv4_prefixlen(self) -> int:
        if self.topology == "subnet" and self.ipv4_second:
            return ipaddress.ip_network(f"0.0.0.0/{self.ipv4_second}").prefixlen
        return 32

    @property
    def ipv4_peer(self) -> str | None:
        return None if self.topology == "subnet" else self.ipv4_second

    @property
    def ipv4_gateway(self) -> str | None:
        return self.route_gateway or self.ipv4_peer


def _route(words: list[str]) -> tuple[str, str | None]:
    net = words[1]
    mask = words[2] if len(words) > 2 and words[2] != "default" else "255.255.255.255"
    gateway = words[3] if len(words) > 3 and words[3] not in ("vpn_gateway", "default") else None
    try:
        cidr = str(ipaddress.ip_network(f"{net}/{mask}", strict=False))
    except ValueError:
        raise NetConfigError(f"bad route {' '.join(words[1:])}") from None
    return cidr, gateway


def parse_settings(options: Iterable[str], base: TunnelSettings | None = None) -> TunnelSettings:
    """Fold option lines (pushed or local, e.g. "route 10.0.0.0 255.0.0.0") into settings."""
    s = base or TunnelSettings()
    for line in options:
        words = line.split()
        if not words:
            continue
        name, args = words[0], words[1:]
        try:
            if name == "topology":
                s.topology = args[0]
            elif name == "ifconfig":
                s.ipv4, s.ipv4_second = args[0], args[1]
            elif name == "ifconfig-ipv6":
                s.ipv6 = args[0] if "/" in args[0] else f"{args[0]}/64"
                s.ipv6_remote = args[1] if len(args) > 1 else None
            elif name == "route-gateway":
                s.route_gateway = args[0] if args[0] != "dhcp" else None
            elif name == "route":
                s.routes.append(_route(words))
            elif name == "route-ipv6":
                gw = args[1] if len(args) > 1 and args[1] != "vpn_gateway" else None
                s.routes6.append((str(ipaddress.ip_network(args[0], strict=False)), gw))
            elif name == "redirect-gateway" or name == "redirect-private":
                flags = set(args)
                s.redirect_v4 = name == "redirect-gateway" and "!ipv4" not in flags
                s.redirect_v6 = "ipv6" in flags
            elif name == "tun-mtu":
                s.tun_mtu = int(args[0])
            elif name == "ping":
                s.ping = int(args[0])
            elif name == "ping-restart":
                s.ping_restart = int(args[0])
            elif name in ("sndbuf", "rcvbuf"):
                setattr(s, name, max(int(args[0]), 0))
        except (IndexError, ValueError):
            raise NetConfigError(f"bad option: {line}") from None
    return s


def own_route_lines(cfg: Config) -> list[str]:
    """Our own route options as option lines; a server's routes are on-link (iroutes),
    a client or p2p endpoint also has its route-gateway and redirect-gateway."""
    lines = []
    single_peer = cfg.role is not Role.SERVER
    if single_peer and cfg.route_gateway:
        lines.append(f"route-gateway {cfg.route_gateway}")
    for route in cfg.routes:
        gw = f" {route.gateway}" if route.gateway else ""
        lines.append(f"route {route.network.network_address} {route.network.netmask}{gw}")
    for route in cfg.routes_ipv6:
        gw = f" {route.gateway}" if route.gateway else ""
        lines.append(f"route-ipv6 {route.network}{gw}")
    if single_peer and cfg.redirect_gateway is not None:
        lines.append(" ".join(("redirect-gateway", *cfg.redirect_gateway)))
    return lines


def settings_from_config(cfg: Config) -> TunnelSettings:
    """Our own ifconfig / ifconfig-ipv6 / route lines (server and p2p) as settings."""
    lines: list[str] = []
    if cfg.ifconfig:
        lines.append(f"ifconfig {cfg.ifconfig[0]} {cfg.ifconfig[1]}")
    if cfg.ifconfig_ipv6:
        lines.append(f"ifconfig-ipv6 {cfg.ifconfig_ipv6[0]} {cfg.ifconfig_ipv6[1]}")
    settings = parse_settings(lines + own_route_lines(cfg), TunnelSettings(topology=cfg.topology))
    settings.tun_mtu = cfg.tun_mtu
    return settings


class AppliedNetwork:
    """What `apply` changed outside the TUN, so that `undo` can remove it."""

    def __init__(self) -> None:
        self.host_routes: list[dict] = []

    def undo(self) -> None:
        with IPRoute() as ipr:
            for spec in self.host_routes:
                with contextlib.suppress(NetlinkError):
                    ipr.route("del", **spec)
        self.host_routes.clear()


def open_tun(name: str, s: TunnelSettings, mtu: int, server_ip: str | None = None,
             vnet_hdr: bool = False) -> tuple[Tun, AppliedNetwork]:
    """Create and configure a TUN (on the netlink thread); delete it again if that fails.

    vnet_hdr: the data path writes coalesced GSO super-packets; reads stay plain packets
    (no offloads asked for), so egress never has to segment.
    """
    tun = Tun(name, mtu=s.tun_mtu or mtu, vnet_hdr=vnet_hdr, offload=0)
    try:
        return tun, apply_settings(tun, s, server_ip)
    except BaseException:
        tun.close()
        raise


def set_txqueuelen(name: str, length: int) -> None:
    """`txqueuelen`: called once the data plane has the TUN, so the admin's value is the
    one that stays (the XDP path raises a short queue when it attaches)."""
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], txqlen=length)


def close_tun(tun: Tun | None, applied: AppliedNetwork | None) -> None:
    """Remove what open_tun made (on the netlink thread)."""
    if applied is not None:
        applied.undo()
    if tun is not None:
        tun.close()


def apply_settings(tun: Tun, s: TunnelSettings, server_ip: str | None = None) -> AppliedNetwork:
    """Configure addresses and routes on `tun` (already created) and bring it up."""
    applied = AppliedNetwork()
    if s.tun_mtu:
        tun.set_mtu(s.tun_mtu)
    if s.ipv4:
        peer = s.ipv4_peer if s.topology != "subnet" else None
        tun.add_address(f"{s.ipv4}/{s.ipv4_prefixlen}", peer=peer)
    if s.ipv6:
        tun.add_address(s.ipv6)
    tun.up()
    if (s.redirect_v4 or s.redirect_v6) and server_ip:
        _pin_server_route(server_ip, applied)
    for cidr, gw in s.routes:
        tun.add_route(cidr, via=gw or _onlink_gateway(s))
    if s.redirect_v4:
        for cidr in DEF1_V4:
            tun.add_route(cidr, via=_onlink_gateway(s))
    for cidr, gw in s.routes6:
        tun.add_route(cidr, via=gw)
    if s.redirect_v6:
        for cidr in DEF1_V6:
            tun.add_route(cidr)
    return applied


def _onlink_gateway(s: TunnelSettings) -> str | None:
    # On a TUN every address is on-link; a gateway matters only for subnet topology,
    # where openvpn routes via route-gateway. Without one, a device route does the same.
    return s.ipv4_gateway if s.topology == "subnet" else None


def _pin_server_route(server_ip: str, applied: AppliedNetwork) -> None:
    """Keep the server reachable through the old path once def1 routes cover everything."""
    address = ipaddress.ip_address(server_ip.removeprefix("::ffff:"))
    family = 10 if address.version == 6 else 2
    with IPRoute() as ipr:
        try:
            found = ipr.route("get", dst=str(address))
        except NetlinkError:
            return
        if not found:
            return
        gateway = found[0].get_attr("RTA_GATEWAY")
        oif = found[0].get_attr("RTA_OIF")
        if gateway is None:
            return  # directly connected: its prefix already beats the /1 routes
        spec = {"dst": f"{address}/{address.max_prefixlen}", "gateway": gateway, "oif": oif,
                "family": family}
        with contextlib.suppress(NetlinkError):
            ipr.route("replace", **spec)
            applied.host_routes.append(spec)
