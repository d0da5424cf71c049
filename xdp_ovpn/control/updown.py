"""openvpn's tunnel scripts: `up` once the TUN is configured, `route-up` once its routes
are in, `down` after it is gone, with openvpn 2.6's arguments (`dev tun_mtu 0
ifconfig_local ifconfig_remote|netmask init|restart`) and environment (the tunnel's
addresses, routes, and every pushed `dhcp-option` / `dns` as `foreign_option_N`).

An `up` or `route-up` that fails (exit status, signal, timeout) is fatal, as openvpn
runs them with S_FATAL; `down`'s status is only logged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from xdp_ovpn.control.log import get_logger
from xdp_ovpn.control.netconfig import TunnelSettings
from xdp_ovpn.control.scripts import ScriptRunner

# Pushed options an up script receives as foreign_option_N (options.c foreign_option).
FOREIGN_OPTIONS = ("dhcp-option", "dns")


class TunnelScriptFailed(Exception):
    """An up or route-up script did not succeed: the tunnel cannot be used as written."""


def foreign_options(pushed: Sequence[str]) -> list[str]:
    """The pushed options openvpn hands to scripts, in the order they came."""
    return [line for line in pushed if line.split(maxsplit=1)[0] in FOREIGN_OPTIONS]


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
    for n, line in enumerate(foreign, start=1):
        env[f"foreign_option_{n}"] = line
    return env


class TunnelScripts:
    """up, route-up and down for one TUN's lifetime; `restart` after the first up."""

    def __init__(self, runner: ScriptRunner) -> None:
        self.runner = runner
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
        env = {**self.runner.base, **tunnel_env(settings, dev, mtu, foreign),
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
