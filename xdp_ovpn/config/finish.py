"""The checks and expansions that need the whole config (openvpn's options_postprocess):
`server`/`keepalive` expansion, role-dependent options, cipher negotiation; and the
reports on a parsed config (`ignored_notes`, `effective_settings`)."""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections.abc import Callable
from dataclasses import replace

from xdp_ovpn.config.model import (
    Config,
    ConfigError,
    Location,
    Remote,
    Role,
    Route,
    TLSWrap,
    Wrapping,
)
from xdp_ovpn.config.options_transport import UNSET_PORT
from xdp_ovpn.config.registry import AEAD_HINT, IGNORED_OPTIONS, NOT_YET, SERVER_MODE_ONLY, Parser
from xdp_ovpn.proto.constants import (
    AEAD_CIPHERS,
)

# ---------------------------------------------------------------- expansion and checks


def finish(p: Parser) -> None:
    cfg = p.cfg
    loc = cfg.locations
    src = Location(cfg.source)

    def where(*names: str) -> Location:
        return next((loc[n] for n in names if n in loc), src)

    for r_index, r in enumerate(cfg.remotes):
        cfg.remotes[r_index] = Remote(
            r.host, cfg.rport if r.port == UNSET_PORT else r.port, r.proto or cfg.proto
        )

    wrap = cfg.tls_wrap
    if wrap and wrap.mode is Wrapping.TLS_AUTH and not p.tls_auth_direction_given:
        cfg.tls_wrap = replace(wrap, direction=cfg.key_direction)
    if cfg.client and (cfg.server or cfg.server_ipv6):
        raise ConfigError("cannot be used together with 'client'", "server", where("server"))
    _expand_server(cfg, where)
    if cfg.client:
        cfg.pull = cfg.tls_client = True

    if cfg.tls_client and cfg.tls_server:
        raise ConfigError(
            "cannot be used together with tls-server", "tls-client", where("tls-client")
        )
    if cfg.mode == "server":
        if not cfg.tls_server:
            raise ConfigError("needs tls-server", "mode server", where("mode"))
        if "topology" not in loc:
            raise ConfigError(
                "openvpn 2.6's default topology is net30, which a server here does not "
                "support; add 'topology subnet' (clients take the pushed topology)",
                "topology",
                where("server", "mode"),
            )
        if cfg.topology != "subnet":
            raise ConfigError(
                "a server needs 'topology subnet' for the DCO-style data path",
                f"topology {cfg.topology}",
                loc["topology"],
            )
        cfg.role = Role.SERVER
    elif cfg.pull:
        if not cfg.tls_client:
            raise ConfigError("needs tls-client (or client)", "pull", where("pull"))
        cfg.role = Role.CLIENT
    elif cfg.tls_client or cfg.tls_server:
        cfg.role = Role.P2P
    else:
        raise ConfigError(
            "no TLS role: use 'client', 'server', or tls-client/tls-server for p2p "
            "(static-key mode is not supported)",
            where=src,
        )
    if cfg.role is Role.CLIENT and not cfg.remotes:
        raise ConfigError("a client needs at least one 'remote'", "remote", where("client", "pull"))

    # Independent checks: each reports its own error.
    for check in (_expand_keepalive, _check_cipher, _check_credentials, _check_role_options):
        try:
            check(cfg, where)
        except ConfigError as exc:
            p.errors.append(exc)


def _expand_server(cfg: Config, where: Callable[..., Location]) -> None:
    """openvpn's helper_client_server for `server-ipv6` and `server` with dev tun."""
    if cfg.server_ipv6 is not None:
        net = cfg.server_ipv6
        cfg.mode, cfg.tls_server = "server", True
        cfg.ifconfig_ipv6 = (
            ipaddress.IPv6Interface(f"{net[1]}/{net.prefixlen}"),
            net[2],
        )
        if cfg.ifconfig_ipv6_pool is not None:
            raise ConfigError(
                "server-ipv6 already defines a pool",
                "ifconfig-ipv6-pool",
                where("ifconfig-ipv6-pool"),
            )
        # Large pools start at +0x1000 like openvpn; small ones right after the server.
        cfg.ifconfig_ipv6_pool_base = net[0x1000 if net.prefixlen < 112 else 2]
        cfg.ifconfig_ipv6_pool = net
        cfg.push.append("tun-ipv6")
    if cfg.server is not None:
        net = cfg.server
        if not cfg.server_nopool and cfg.ifconfig_pool is not None:
            raise ConfigError(
                "server already defines a pool", "ifconfig-pool", where("ifconfig-pool")
            )
        cfg.mode, cfg.tls_server = "server", True
        cfg.ifconfig = (str(net[1]), str(net.netmask))
        if not cfg.server_nopool:
            cfg.ifconfig_pool = (net[2], net[-2])
        cfg.ifconfig_pool_netmask = net.netmask
        cfg.push.append(f"route-gateway {net[1]}")
        if cfg.route_gateway is None:
            cfg.route_gateway = str(net[2])
        cfg.push.append("topology subnet")


def _expand_keepalive(cfg: Config, where: Callable[..., Location]) -> None:
    """openvpn's helper_keepalive: a server doubles its own timeout and pushes the pair."""
    if cfg.keepalive is None:
        return
    if cfg.ping or cfg.ping_restart or cfg.ping_exit:
        raise ConfigError(
            "conflicts with ping, ping-exit and ping-restart", "keepalive", where("keepalive")
        )
    interval, timeout = cfg.keepalive
    cfg.ping = interval
    if cfg.role is Role.SERVER:
        cfg.ping_restart = timeout * 2
        cfg.push += [f"ping {interval}", f"ping-restart {timeout}"]
    else:
        cfg.ping_restart = timeout


def _check_cipher(cfg: Config, where: Callable[..., Location]) -> None:
    """--cipher: ignored for negotiation with pull or a server (2.6); the fallback in p2p."""
    if cfg.cipher is None or cfg.cipher in AEAD_CIPHERS:
        return
    if cfg.role is Role.P2P:
        raise ConfigError(
            f"{cfg.cipher} is not an AEAD cipher (p2p uses it as the fallback); {AEAD_HINT}",
            "cipher",
            where("cipher"),
        )
    cfg.warnings.append(
        f"cipher {cfg.cipher} is ignored: negotiation uses data-ciphers "
        f"({':'.join(cfg.data_ciphers)})"
    )
    cfg.cipher = None


# Options that act in some roles only, and where they would silently do nothing:
# SERVER_MODE_ONLY (registry.py) and these.
# openvpn has these on a client too; here the server has them only, so far:
_SERVER_ONLY_SO_FAR = ("user", "group", "tls-verify")
_PULL_ONLY = ("route-nopull", "pull-filter")
# Harmless in some roles: (roles, why), logged like IGNORED_OPTIONS.
_IGNORED_IN_ROLE = {
    "persist-tun": ((Role.SERVER,), "a server's restart makes the TUN again; clients reconnect"),
    "status-version": (
        (Role.CLIENT, Role.P2P),
        "a client's status file has one format, as in openvpn",
    ),
}


def _check_role_options(cfg: Config, where: Callable[..., Location]) -> None:
    loc = cfg.locations
    for name, (roles, _) in _IGNORED_IN_ROLE.items():
        if cfg.role in roles and name in loc:
            cfg.ignored.setdefault(name, loc[name])
    if cfg.role is not Role.SERVER:
        for name in SERVER_MODE_ONLY:
            if name in loc:
                raise ConfigError("needs mode server (as in openvpn)", name, loc[name])
        if cfg.verify_client_cert != "require":
            raise ConfigError(
                "needs mode server (as in openvpn)", "verify-client-cert", loc["verify-client-cert"]
            )
        for name in _SERVER_ONLY_SO_FAR:
            if name in loc:
                raise ConfigError(f"{NOT_YET} on a {cfg.role.value}; remove it", name, loc[name])
    else:
        if "ping-exit" in loc:
            raise ConfigError(
                "a server does not exit for one client's silence; use keepalive",
                "ping-exit",
                loc["ping-exit"],
            )
        if "redirect-gateway" in loc:
            raise ConfigError(
                'on a server, push it to clients: push "redirect-gateway def1"',
                "redirect-gateway",
                loc["redirect-gateway"],
            )
    for name in ("up", "route-up", "down"):
        if name in loc and cfg.script_security < 2:
            raise ConfigError(
                "needs 'script-security 2' (openvpn stops at the first run of it otherwise)",
                name,
                loc[name],
            )
    if cfg.role is not Role.CLIENT:
        for name in _PULL_ONLY:
            if name in loc:
                raise ConfigError("only for a client (pull)", name, loc[name])


def _check_credentials(cfg: Config, where: Callable[..., Location]) -> None:
    pinned = bool(cfg.peer_fingerprints)
    if cfg.ca is None and not pinned:
        raise ConfigError(
            "missing: give 'ca' or 'peer-fingerprint'", "ca", where("client", "server")
        )
    client_without_cert = cfg.role is Role.CLIENT and cfg.auth_user_pass is not None
    for name in ("cert", "key"):
        if getattr(cfg, name) is None and not client_without_cert:
            raise ConfigError(
                "missing", name, where("client", "server", "tls-client", "tls-server")
            )


def ignored_notes(cfg: Config) -> list[str]:
    """One line per ignored option (its first use), for the log at start."""
    notes = []
    for name, where in cfg.ignored.items():
        why = IGNORED_OPTIONS.get(name) or _IGNORED_IN_ROLE.get(name, (None, ""))[1]
        why = why or "listed in ignore-unknown-option"
        notes.append(f"{where}: {name}: ignored ({why})")
    return notes


def effective_settings(cfg: Config) -> list[str]:
    """Every setting of a parsed config after openvpn's expansions, one `field = value`
    a line (certificates and keys as their size), then ignored options and warnings."""
    skip = {"source", "directory", "locations", "ignored", "warnings"}
    lines = [f"config = {cfg.source}", f"directory = {cfg.directory}"]
    for f in dataclasses.fields(Config):
        if f.name not in skip:
            lines.append(f"{f.name} = {_show(getattr(cfg, f.name))}")
    lines += [f"note: {n}" for n in ignored_notes(cfg)]
    lines += [f"warning: {w}" for w in cfg.warnings]
    return lines


def _show(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, TLSWrap):
        where = value.path or "inline"
        direction = "" if value.direction is None else f", direction {value.direction}"
        return f"{value.mode.value} ({where}{direction})"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Remote):
        return f"{value.host} {value.port} {value.proto}"
    if isinstance(value, Route):
        return " ".join(str(v) for v in (value.network, value.gateway, value.metric) if v)
    return str(value)
