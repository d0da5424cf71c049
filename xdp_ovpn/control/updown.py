"""openvpn's tunnel scripts: `up` once the TUN is configured, `route-up` once its routes
are in, `down` after it is gone, with openvpn 2.6's arguments (`dev tun_mtu 0
ifconfig_local ifconfig_remote|netmask init|restart`) and environment (the tunnel's
addresses, routes, every pushed `dhcp-option` as `foreign_option_N`, and pushed `dns`
options as `dns_search_domain_N` / `dns_server_N_*`, dns.c's names).

An `up` or `route-up` that fails (exit status, signal, timeout) is fatal, as openvpn
runs them with S_FATAL; `down`'s status is only logged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from xdp_ovpn.control.log import get_logger
from xdp_ovpn.control.netconfig import TunnelSettings
from xdp_ovpn.control.scripts import ScriptRunner

# Pushed options an up script receives as foreign_option_N (options.c foreign_option);
# `dns` ones come as dns_* variables instead.
FOREIGN_OPTIONS = ("dhcp-option",)
SCRIPT_OPTIONS = (*FOREIGN_OPTIONS, "dns")
_DNS_SERVER_SINGLE = ("dnssec", "transport", "sni")


class TunnelScriptFailed(Exception):
    """An up or route-up script did not succeed: the tunnel cannot be used as written."""


def _name(line: str) -> str:
    words = line.split(maxsplit=1)
    return words[0] if words else ""


def foreign_options(pushed: Sequence[str]) -> list[str]:
    """The pushed options openvpn hands to scripts (dhcp-option, dns), in order."""
    return [line for line in pushed if _name(line) in SCRIPT_OPTIONS]


def _address_port(text: str) -> tuple[str, str | None]:
    """`1.2.3.4`, `1.2.3.4:53`, `::1` or `[::1]:53` as (address, port)."""
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        return address, rest[1:] or None
    if text.count(":") == 1:
        address, port = text.split(":")
        return address, port
    return text, None


def dns_env(pushed: Sequence[str]) -> dict[str, str]:
    """openvpn 2.6's variables for `dns search-domains ...` and `dns server N ...` lines
    (servers numbered from 1 in priority order)."""
    env: dict[str, str] = {}
    domains: list[str] = []
    servers: dict[int, dict[str, list[str]]] = {}
    for line in pushed:
        words = line.split()
        if len(words) < 3 or words[0] != "dns":
            continue
        if words[1] == "search-domains":
            domains += words[2:]
        elif words[1] == "server" and len(words) > 4 and words[2].lstrip("-").isdigit():
            server = servers.setdefault(int(words[2]), {})
            server.setdefault(words[3], []).extend(words[4:])
    for i, domain in enumerate(domains, start=1):
        env[f"dns_search_domain_{i}"] = domain
    for i, (_, server) in enumerate(sorted(servers.items()), start=1):
        for j, text in enumerate(server.get("address", []), start=1):
            address, port = _address_port(text)
            env[f"dns_server_{i}_address_{j}"] = address
            if port:
                env[f"dns_server_{i}_port_{j}"] = port
        for j, domain in enumerate(server.get("resolve-domains", []), start=1):
            env[f"dns_server_{i}_resolve_domain_{j}"] = domain
        for key in _DNS_SERVER_SINGLE:
            if server.get(key):
                env[f"dns_server_{i}_{key}"] = server[key][0]
    return env


def tunnel_env(settings: TunnelSettings, dev: str, mtu: int,
               foreign: Sequence[str]) -> dict[str, str]:
    """The variables openvpn adds for up/route-up/down (tun.c, route.c, options.c)."""
    env = {"dev": dev, "tun_mtu": str(mtu), "link_mtu": "0"}
    if settings.ipv4:
        env["ifconfig_local"] = settings.ipv4
        if settings.ipv4_second:
            key = "ifconfig_netmask" if settings.topology == "subnet" else "ifconfig_remote"
            env[key] = settings.ipv4_second
    if settings.ipv6:
        iface = ipaddress.IPv6Interface(settings.ipv6)
        env["ifconfig_ipv6_local"] = str(iface.ip)
        env["ifconfig_ipv6_netbits"] = str(iface.network.prefixlen)
        if settings.ipv6_remote:
            env["ifconfig_ipv6_remote"] = settings.ipv6_remote
    gateway = settings.ipv4_gateway
    if gateway:
        env["route_vpn_gateway"] = gateway
    for n, (cidr, via) in enumerate(settings.routes, start=1):
        net = ipaddress.IPv4Network(cidr)
        env[f"route_network_{n}"] = str(net.network_address)
        env[f"route_netmask_{n}"] = str(net.netmask)
        env[f"route_gateway_{n}"] = via or gateway or ""
    for n, (cidr, via) in enumerate(settings.routes6, start=1):
        env[f"route_ipv6_network_{n}"] = cidr
        if via:
            env[f"route_ipv6_gateway_{n}"] = via
    env["redirect_gateway"] = "1" if settings.redirect_v4 or settings.redirect_v6 else "0"
    dhcp = [line for line in foreign if _name(line) in FOREIGN_OPTIONS]
    for n, line in enumerate(dhcp, start=1):
        env[f"foreign_option_{n}"] = line
    env.update(dns_env(foreign))
    return env


class TunnelScripts:
    """up, route-up and down for one TUN's lifetime; `restart` after the first up. The
    config's own dhcp-option / dns lines come before the pushed ones."""

    def __init__(self, runner: ScriptRunner) -> None:
        self.runner = runner
        self.own_options = list(runner.cfg.script_dns_options)
        self.log = get_logger()
        self._ups = 0
        self._env: dict[str, str] | None = None
        self._args: list[str] = []

    @property
    def configured(self) -> bool:
        return any(self.runner.configured(t) for t in ("up", "route-up", "down"))

    async def up(self, settings: TunnelSettings, dev: str, mtu: int,
                 foreign: Sequence[str] = ()) -> None:
        """Run up, then route-up (the routes are in by now); raise TunnelScriptFailed."""
        context = "restart" if self._ups else "init"
        self._ups += 1
        options = [*self.own_options, *foreign]
        env = {**self.runner.base, **tunnel_env(settings, dev, mtu, options),
               "script_context": context}
        self._env = env
        local = env.get("ifconfig_local", "")
        second = env.get("ifconfig_netmask", env.get("ifconfig_remote", ""))
        self._args = [dev, str(mtu), "0", local, second]
        for script_type, args in (("up", [*self._args, context]), ("route-up", [])):
            if self.runner.configured(script_type):
                status = await self.runner.run(script_type, args, env)
                if status != 0:
                    raise TunnelScriptFailed(f"{script_type} script failed (status {status})")

    async def down(self) -> None:
        """Run down for the last up (its status is logged, not acted on)."""
        env, self._env = self._env, None
        if env is None or not self.runner.configured("down"):
            return
        status = await self.runner.run("down", [*self._args, env["script_context"]], env)
        if status != 0:
            self.log.warning("WARNING: down script failed (status %s)", status)
