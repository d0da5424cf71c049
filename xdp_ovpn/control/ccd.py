"""client-config-dir: per-client options from `DIR/<common name>` (or `DIR/DEFAULT`).

The same parser reads the dynamic file a client-connect script writes. Supported, as in
openvpn's CCD context (options.c, OPT_P_INSTANCE and friends): ifconfig-push,
ifconfig-ipv6-push, iroute, iroute-ipv6, push, push-reset, push-remove, disable. A bad
line is a one-line error and is skipped, as openvpn skips it, so that a typo never hides
a `disable` further down.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdp_ovpn.config import ConfigError, Directive, read_directives

DEFAULT_ENTRY = "DEFAULT"
_MAX_FILE = 256 * 1024
# openvpn's CC_NAME class for file names from a common name (misc.c string_mod):
# alphanumerics, '_', '-', '.', '@'; "." and ".." themselves are not names.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")

PushOp = tuple[str, str]  # ("push", option) | ("reset", "") | ("remove", substring)


@dataclass
class ClientConfig:
    """What a CCD entry (or a client-connect file) says about one client."""

    source: str = ""
    disable: bool = False
    ifconfig_push: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None  # addr, mask
    ifconfig_ipv6_push: tuple[ipaddress.IPv6Interface, ipaddress.IPv6Address | None] | None = None
    iroutes: list[ipaddress.IPv4Network] = field(default_factory=list)
    iroutes_ipv6: list[ipaddress.IPv6Network] = field(default_factory=list)
    push_ops: list[PushOp] = field(default_factory=list)  # in file order
    errors: list[str] = field(default_factory=list)  # one line each, for the log

    def push_options(self, base: Sequence[str]) -> list[str]:
        """The server's push list after this entry's push, push-reset and push-remove."""
        out = list(base)
        for op, arg in self.push_ops:
            if op == "reset":
                out.clear()
            elif op == "remove":
                out = [o for o in out if arg not in o]
            else:
                out.append(arg)
        return out

    def update(self, later: ClientConfig) -> ClientConfig:
        """This entry with a later one applied on top (CCD file, then client-connect file)."""
        return ClientConfig(
            source=f"{self.source}+{later.source}" if self.source else later.source,
            disable=self.disable or later.disable,
            ifconfig_push=later.ifconfig_push or self.ifconfig_push,
            ifconfig_ipv6_push=later.ifconfig_ipv6_push or self.ifconfig_ipv6_push,
            iroutes=[*self.iroutes, *later.iroutes],
            iroutes_ipv6=[*self.iroutes_ipv6, *later.iroutes_ipv6],
            push_ops=[*self.push_ops, *later.push_ops],
            errors=[*self.errors, *later.errors],
        )

    @property
    def all_iroutes(self) -> list[str]:
        """Every iroute in prefix form, IPv4 first (what the data plane and status take)."""
        return [str(n) for n in (*self.iroutes, *self.iroutes_ipv6)]


def _bad(d: Directive, reason: str) -> ConfigError:
    return ConfigError(reason, d.name, d.where)


def _arity(d: Directive, lo: int, hi: int) -> None:
    if not lo <= len(d.args) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise _bad(d, f"takes {want} argument{'s' if hi != 1 else ''}, got {len(d.args)}")


def _v4(d: Directive, text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise _bad(d, f"{text!r} is not an IPv4 address") from None


def _apply(cfg: ClientConfig, d: Directive) -> None:
    name = d.name
    if name == "disable":
        _arity(d, 0, 0)
        cfg.disable = True
    elif name == "push":
        _arity(d, 1, 1)
        cfg.push_ops.append(("push", d.args[0]))
    elif name == "push-reset":
        _arity(d, 0, 0)
        cfg.push_ops.append(("reset", ""))
    elif name == "push-remove":
        _arity(d, 1, 1)
        cfg.push_ops.append(("remove", d.args[0]))
    elif name == "ifconfig-push":
        _arity(d, 2, 3)  # a third word (an alias address) is accepted and unused, as on Linux
        cfg.ifconfig_push = (_v4(d, d.args[0]), _v4(d, d.args[1]))
    elif name == "ifconfig-ipv6-push":
        _arity(d, 1, 2)
        try:
            iface = ipaddress.IPv6Interface(d.args[0])
            remote = ipaddress.IPv6Address(d.args[1]) if len(d.args) > 1 else None
        except ValueError as exc:
            raise _bad(d, f"bad IPv6 address: {exc}") from None
        if "/" not in d.args[0]:
            raise _bad(d, "needs address/bits")
        cfg.ifconfig_ipv6_push = (iface, remote)
    elif name == "iroute":
        _arity(d, 1, 2)
        mask = d.args[1] if len(d.args) > 1 else "255.255.255.255"
        try:
            cfg.iroutes.append(ipaddress.IPv4Network(f"{_v4(d, d.args[0])}/{mask}", strict=False))
        except ValueError:
            raise _bad(d, f"bad network/netmask {d.args[0]} {mask}") from None
    elif name == "iroute-ipv6":
        _arity(d, 1, 1)
        try:
            cfg.iroutes_ipv6.append(ipaddress.IPv6Network(d.args[0], strict=False))
        except ValueError:
            raise _bad(d, f"bad IPv6 network {d.args[0]!r}") from None
    else:
        raise _bad(d, "not allowed in a client-config-dir file (or not supported)")


def parse(text: str, source: str = "<ccd>") -> ClientConfig:
    """Parse a CCD or client-connect file; bad lines land in `errors`, the rest applies."""
    cfg = ClientConfig(source=source)
    try:
        directives = read_directives(text, source)
    except ConfigError as exc:
        cfg.errors.append(str(exc))
        return cfg
    for d in directives:
        try:
            _apply(cfg, d)
        except ConfigError as exc:
            cfg.errors.append(str(exc))
    return cfg


def entry_name(common_name: str) -> str | None:
    """The file name for a common name, or None when it is not a safe name (no lookup)."""
    if common_name in ("", ".", "..") or not set(common_name) <= _NAME_CHARS:
        return None
    return common_name


def read_file(path: Path) -> str | None:
    """A CCD file's text; None when there is none (or it is unreadable or absurdly big)."""
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError:
        return None
    if len(data) > _MAX_FILE:
        return None
    return data.decode("utf-8", "replace")


def lookup(directory: Path, common_name: str) -> ClientConfig | None:
    """The entry for `common_name`, else DEFAULT, else None (openvpn's order)."""
    name = entry_name(common_name)
    for candidate in ([name] if name else []) + [DEFAULT_ENTRY]:
        path = directory / candidate
        text = read_file(path)
        if text is not None:
            return parse(text, str(path))
    return None
