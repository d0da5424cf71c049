"""Options: server features (scripts, client-config-dir, management, status) and
xdp-ovpn's own (xdp-interface, xdp-mode, xdp-control-limit)."""

from __future__ import annotations

from xdp_ovpn.config.lexer import Directive
from xdp_ovpn.config.model import ConfigError, Management
from xdp_ovpn.config.registry import Parser, arity, handles, int_arg

# ---------------------------------------------------------------- server features


@handles("auth-user-pass-verify", min_args=2, max_args=2, fields=("auth_user_pass_verify",))
def _auth_user_pass_verify(p: Parser, d: Directive) -> None:
    if d.args[1] not in ("via-env", "via-file"):
        raise ConfigError(f"method must be via-env or via-file, not {d.args[1]!r}", d.name, d.where)
    p.cfg.auth_user_pass_verify = (d.args[0], d.args[1])


@handles("dhcp-option", "dns", min_args=1, max_args=16, fields=("script_dns_options",))
def _dns_for_scripts(p: Parser, d: Directive) -> None:
    p.cfg.script_dns_options.append(" ".join((d.name, *d.args)))


@handles("setenv", "setenv-safe", min_args=1, max_args=64, fields=("setenv",))
def _setenv(p: Parser, d: Directive) -> None:
    if d.name == "setenv" and d.args[0] == "opt":
        # `setenv opt OPTION ...`: OPTION applies where known, is ignored where not.
        if len(d.args) > 1:
            p.ignore_unknown.add(d.args[1])
            p.apply(Directive(d.args[1], d.args[2:], d.where))
        return
    if len(d.args) > 2:
        raise ConfigError(arity(1, 2, len(d.args)), d.name, d.where)
    name = d.args[0] if d.name == "setenv" else f"OPENVPN_{d.args[0]}"
    p.cfg.setenv[name] = d.args[1] if len(d.args) > 1 else ""


@handles("status", min_args=1, max_args=2, fields=("status", "status_seconds"))
def _status(p: Parser, d: Directive) -> None:
    p.cfg.status = p.path(d.args[0])
    if len(d.args) > 1:
        p.cfg.status_seconds = int_arg(d, d.args[1])


@handles("management", min_args=2, max_args=3, fields=("management",))
def _management(p: Parser, d: Directive) -> None:
    pw = p.path(d.args[2]) if len(d.args) > 2 and d.args[2] != "stdin" else None
    p.cfg.management = Management(d.args[0], d.args[1], pw)


# ---------------------------------------------------------------- xdp-ovpn's own

XDP_MODES = ("auto", "native", "generic")


@handles("xdp-interface", min_args=1, max_args=1, fields=("xdp_interfaces",))
def _xdp_interface(p: Parser, d: Directive) -> None:
    p.cfg.xdp_interfaces.append(d.args[0])


@handles("xdp-mode", min_args=1, max_args=1, fields=("xdp_mode",))
def _xdp_mode(p: Parser, d: Directive) -> None:
    if d.args[0] not in XDP_MODES:
        raise ConfigError(f"must be one of {', '.join(XDP_MODES)}, not {d.args[0]!r}",
                          d.name, d.where)
    p.cfg.xdp_mode = d.args[0]
