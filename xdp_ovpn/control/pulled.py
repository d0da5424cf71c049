"""What a pulling client keeps of the server's PUSH_REPLY, and what it adds of its own.

openvpn 2.6 order: each pushed option goes through the `pull-filter` lines in order (the
first whose text is a prefix of the option decides: accept, ignore, or reject, which
restarts the connection); `route-nopull` then drops routes and DNS/DHCP options. The
client's own `route`, `route-ipv6`, `route-gateway` and `redirect-gateway` lines apply on
top of what was pushed (netconfig.own_route_lines).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xdp_ovpn.config import Config

# What route-nopull keeps out (options.c: OPT_P_ROUTE and OPT_P_DHCPDNS).
NOPULL_OPTIONS = frozenset(
    {"route", "route-ipv6", "redirect-gateway", "redirect-private", "block-outside-dns",
     "dhcp-option", "dns"}
)


@dataclass
class Pulled:
    accepted: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    rejected: str | None = None  # the first option a `pull-filter reject` matched


def filter_pushed(cfg: Config, options: list[str]) -> Pulled:
    """Apply pull-filter and route-nopull to the pushed option lines."""
    out = Pulled()
    for option in options:
        action = next((a for a, text in cfg.pull_filters if option.startswith(text)), "accept")
        if action == "reject":
            out.rejected = option
            return out
        name = option.split(maxsplit=1)[0] if option.strip() else ""
        if action == "ignore" or (cfg.route_nopull and name in NOPULL_OPTIONS):
            out.ignored.append(option)
        else:
            out.accepted.append(option)
    return out

