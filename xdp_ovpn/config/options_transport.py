"""Options: includes and directories, the TUN device, the UDP transport."""

from __future__ import annotations

from xdp_ovpn.config.lexer import MAX_INCLUDE_DEPTH, Directive, read_directives
from xdp_ovpn.config.model import ConfigError, Remote
from xdp_ovpn.config.registry import Parser, handles, int_arg, port_arg

# ---------------------------------------------------------------- structure


@handles("config", min_args=1, max_args=1)
def _config(p: Parser, d: Directive) -> None:
    if p.depth >= MAX_INCLUDE_DEPTH:
        raise ConfigError("config files nested too deeply", d.name, d.where)
    text, path = p.read(d)
    if not p.cd_seen and path is not None:
        # Like `load`: files named in a config resolve against its directory.
        p.cfg.directory = path.parent
    p.depth += 1
    try:
        p.run(read_directives(text.decode("utf-8", "replace"), str(path), p.errors))
    finally:
        p.depth -= 1


@handles("cd", min_args=1, max_args=1)
def _cd(p: Parser, d: Directive) -> None:
    target = p.path(d.args[0])
    if not target.is_dir():
        raise ConfigError(f"{target} is not a directory", d.name, d.where)
    p.cfg.directory = target
    p.cd_seen = True


@handles("ignore-unknown-option", min_args=1, max_args=64)
def _ignore_unknown(p: Parser, d: Directive) -> None:
    p.ignore_unknown.update(d.args)


# ---------------------------------------------------------------- device


_TAP_REASON = "layer 2 (tap) is not supported: the DCO-style data path is tun only"


@handles("dev", min_args=1, max_args=1, fields=("dev",))
def _dev(p: Parser, d: Directive) -> None:
    name = d.args[0]
    if name.startswith("tap"):
        raise ConfigError(_TAP_REASON, f"dev {name}", d.where)
    if name.startswith("null"):
        raise ConfigError("a null device carries no traffic; use tun", f"dev {name}", d.where)
    p.cfg.dev = name


@handles("dev-type", min_args=1, max_args=1)
def _dev_type(p: Parser, d: Directive) -> None:
    if d.args[0] != "tun":
        raise ConfigError(_TAP_REASON, f"dev-type {d.args[0]}", d.where)


# Below this an MSS would be useless (576: the datagram every IPv4 host must accept).
_MSSFIX_MIN = 576


@handles("mssfix", max_args=2, fields=("mssfix", "mssfix_mode"))
def _mssfix(p: Parser, d: Directive) -> None:
    if not d.args:  # openvpn: the default, as if absent
        p.cfg.mssfix, p.cfg.mssfix_mode = None, ""
        return
    value = int_arg(d, d.args[0], 0, 65535)
    if 0 < value < _MSSFIX_MIN:
        raise ConfigError(f"must be 0 (no clamping) or at least {_MSSFIX_MIN}, not {value}",
                          d.name, d.where)
    mode = d.args[1] if len(d.args) > 1 else ""
    if mode not in ("", "mtu", "fixed"):
        raise ConfigError(f"the second argument must be mtu or fixed, not {mode!r}",
                          d.name, d.where)
    p.cfg.mssfix, p.cfg.mssfix_mode = value, mode


@handles("tun-mtu", min_args=1, max_args=2, fields=("tun_mtu",))
def _tun_mtu(p: Parser, d: Directive) -> None:
    p.cfg.tun_mtu = int_arg(d, d.args[0], 576, 65535)


# ---------------------------------------------------------------- transport

_UDP_PROTOS = ("udp", "udp4", "udp6")


def _check_proto(d: Directive, proto: str, option: str) -> str:
    proto = proto.lower()
    if proto in _UDP_PROTOS:
        return proto
    if proto.startswith("tcp"):
        raise ConfigError(
            "TCP is not supported yet (udp, udp4 or udp6)", f"{option} {proto}", d.where
        )
    raise ConfigError(f"unknown protocol {proto!r} (udp, udp4 or udp6)", d.name, d.where)


@handles("proto", min_args=1, max_args=1, fields=("proto",))
def _proto(p: Parser, d: Directive) -> None:
    p.cfg.proto = _check_proto(d, d.args[0], "proto")


@handles("port", "lport", "rport", min_args=1, max_args=1, fields=("lport", "rport"))
def _ports(p: Parser, d: Directive) -> None:
    port = port_arg(d, d.args[0])
    if d.name in ("port", "lport"):
        p.cfg.lport = port
    if d.name in ("port", "rport"):
        p.cfg.rport = port


@handles("local", min_args=1, max_args=1, fields=("local",))
def _local(p: Parser, d: Directive) -> None:
    p.cfg.local = d.args[0]


# A remote's port and proto default to rport/proto at the end of parsing, like openvpn.
UNSET_PORT = -1


@handles("remote", min_args=1, max_args=3, fields=("remotes",))
def _remote(p: Parser, d: Directive) -> None:
    port = port_arg(d, d.args[1]) if len(d.args) > 1 else UNSET_PORT
    proto = _check_proto(d, d.args[2], "remote") if len(d.args) > 2 else ""
    p.cfg.remotes.append(Remote(d.args[0], port, proto))


@handles(
    "connect-retry", min_args=1, max_args=2, fields=("connect_retry", "connect_retry_wait_max")
)
def _connect_retry(p: Parser, d: Directive) -> None:
    p.cfg.connect_retry = int_arg(d, d.args[0])
    if len(d.args) > 1:
        p.cfg.connect_retry_wait_max = int_arg(d, d.args[1])
