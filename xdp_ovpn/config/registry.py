"""The option registry: every option's one outcome (supported, refused, ignored), its
handler and the Config fields it acts through (`option_table`), and the `Parser` that
applies directives to a Config.

Every option the parser knows has exactly one outcome: supported (a handler stores it in
the Config fields through which it acts), refused (one line naming the option, its line
and the reason), or ignored (harmless here; each use is logged once at start)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from xdp_ovpn.config.lexer import INLINE_TAGS, Directive
from xdp_ovpn.config.model import Config, ConfigError, ConfigErrors

Handler = Callable[["Parser", Directive], None]
HANDLERS: dict[str, tuple[int, int, Handler]] = {}
_FIELDS: dict[str, tuple[str, ...]] = {}  # option -> the Config fields it acts through
# Options whose whole effect happens inside the parser (includes, paths, accepted values
# that match what xdp-ovpn does anyway).
PARSER_ONLY = frozenset(
    {"config", "cd", "ignore-unknown-option", "allow-compression", "dev-type", "auth-retry"}
)


def handles(
    *names: str, min_args: int = 0, max_args: int = 0, fields: tuple[str, ...] = ()
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = (min_args, max_args, fn)
            _FIELDS[name] = fields
        return fn

    return register


# Accepted without effect: each is harmless here for the reason given, and each use is
# logged once at start.
IGNORED_OPTIONS: dict[str, str] = {
    "resolv-retry": "a remote's name is resolved again at every connection attempt",
    "mute-replay-warnings": "log volume only",
    "mute": "log volume only",
    "suppress-timestamps": "log format only",
    "machine-readable-output": "log format only",
    "persist-local-ip": "the local address is kept across restarts anyway",
    "persist-remote-ip": "the remote's name is resolved again at each attempt instead",
    "persist-key": "keys are read once at start and kept across restarts anyway",
    "auth-nocache": "xdp-ovpn never prompts for or caches credentials",
    "tun-ipv6": "obsolete: IPv6 on the TUN is always available",
    "ping-timer-rem": "the ping timers run whether or not a remote is known",
    "fast-io": "a tuning of openvpn's own event loop",
    "comp-noadapt": "compression is not used at all",
    "route-delay": "routes are added as soon as the TUN is up",
    "route-method": "Windows only",
    "ip-win32": "Windows only",
    "block-outside-dns": "Windows only",
    "register-dns": "Windows only",
    "dev-node": "Linux TUN devices are always opened through /dev/net/tun",
    "server-poll-timeout": "each attempt is bounded by hand-window",
    "connect-timeout": "each attempt is bounded by hand-window",
    "tls-timeout": "the control channel retransmits on its own adaptive timer",
    "explicit-exit-notify": "EXIT is always sent at shutdown to peers that understand it",
    "push-peer-info": "the client sends the basic peer-info set (IV_VER, IV_PROTO, ...)",
    "allow-pull-fqdn": "pushed routes take addresses only",
    "push-reset": "meaningful in client-config-dir files only",
    "single-session": "a p2p endpoint serves one session at a time anyway",
    "opt-verify": "deprecated in openvpn 2.6; the options string is not compared",
    "disable-dco": "xdp-ovpn is its own data path either way",
    "dh": "TLS uses ECDHE here: DH parameters are not needed, as with 'dh none'",
}

AEAD_HINT = "the DCO-style data path does AES-128/192/256-GCM and CHACHA20-POLY1305 only"
NOT_YET = "not supported yet"
_COMPRESS_REASON = (
    "compression framing (stubs included) is not supported by the DCO-style data path; remove it"
)
# Options openvpn has that xdp-ovpn does not honour: refused at start with the reason.
_REFUSED: dict[str, str] = {
    "fragment": "not supported by the DCO-style data path; lower tun-mtu",
    "comp-lzo": "compression is not supported by the DCO-style data path "
    "(openvpn 2.6 disables DCO for it too); remove it",
    "compress": _COMPRESS_REASON,
    "secret": "static-key mode is not supported; use TLS (ca/cert/key)",
    "connection": "<connection> blocks are not supported; use several 'remote' lines",
    "daemon": "xdp-ovpn runs in the foreground; use a service manager",
    "shaper": "not supported by the DCO-style data path; use tc",
    "server-bridge": "layer 2 (tap) is not supported: the DCO-style data path is tun only",
    "socks-proxy": "needs TCP, which is not supported yet",
    "http-proxy": "needs TCP, which is not supported yet",
    "pkcs12": "not supported; give ca, cert and key in PEM",
    "plugin": "plugins are not supported",
    "tls-exit": NOT_YET,
    "remap-usr1": NOT_YET,
    "management-client": f"{NOT_YET}; management listens for connections",
    "management-hold": NOT_YET,
    "management-query-passwords": f"{NOT_YET}; give auth-user-pass a file",
    "askpass": f"{NOT_YET}; give an unencrypted key (xdp-ovpn does not prompt)",
    "chroot": NOT_YET,
    "mlock": NOT_YET,
    "up-delay": NOT_YET,
    "up-restart": NOT_YET,
    "route-pre-down": NOT_YET,
    "ipchange": NOT_YET,
    "iproute": f"{NOT_YET}; xdp-ovpn configures the TUN and routes over netlink",
    "ifconfig-noexec": NOT_YET,
    "route-noexec": NOT_YET,
    "redirect-private": NOT_YET,
    "auth-gen-token": NOT_YET,
    "auth-user-pass-optional": NOT_YET,
    "client-cert-not-required": "use 'verify-client-cert none'",
    "ccd-exclusive-dir": NOT_YET,
    "tmp-dir": NOT_YET,
    "ifconfig-pool-linear": "removed in openvpn 2.5; use topology subnet",
    "stale-routes-check": NOT_YET,
    "inactive": NOT_YET,
    "session-timeout": NOT_YET,
    "bcast-buffers": NOT_YET,
    "tcp-queue-limit": "needs TCP, which is not supported yet",
    "port-share": "needs TCP, which is not supported yet",
    "mark": NOT_YET,
    "bind-dev": NOT_YET,
    "lladdr": "layer 2 (tap) is not supported: the DCO-style data path is tun only",
    "key-method": "removed in openvpn 2.5 (key method 2 is used)",
    "tls-cert-profile": NOT_YET,
    "x509-username-field": NOT_YET,
    "x509-track": NOT_YET,
    "capath": f"{NOT_YET}; give the CA certificates in one 'ca' file",
    "pkcs11-providers": NOT_YET,
    "cryptoapicert": "Windows only",
    "engine": NOT_YET,
    "providers": NOT_YET,
}
# Known plugins and what to use instead.
_PLUGIN_HINTS = {
    "auth-pam": "use 'auth-user-pass-verify' with a script that checks PAM",
    "down-root": "use 'down' (it runs with the privileges kept after user/group)",
    "auth-ldap": "use 'auth-user-pass-verify' with a script that checks LDAP",
    "radiusplugin": "use 'auth-user-pass-verify' with a script that checks RADIUS",
}


def _refusal(d: Directive) -> tuple[str, str]:
    """The option label and the reason of a refused directive."""
    reason = _REFUSED[d.name]
    if d.name == "plugin" and d.args:
        for module, hint in _PLUGIN_HINTS.items():
            if module in Path(d.args[0]).name:
                return d.name, f"{reason}; {hint}"
    if d.name == "compress":
        return " ".join((d.name, *d.args[:1])), reason
    return d.name, reason


class Outcome(enum.StrEnum):
    SUPPORTED = "supported"
    REFUSED = "refused"
    IGNORED = "ignored"


@dataclass(frozen=True)
class OptionEntry:
    """One row of the option table: what happens to an option written in a config."""

    name: str
    outcome: Outcome
    note: str = ""  # refused: the reason; ignored: why it is harmless; supported: limits
    fields: tuple[str, ...] = ()  # supported: the Config fields it acts through


# What a supported option accepts of what openvpn does; the rest is refused with a line.
_LIMITS = {
    "allow-compression": "'no' only",
    "auth-retry": "'none' only",
    "auth-user-pass": "a file or an inline block (xdp-ovpn does not prompt)",
    "cipher": "an AEAD cipher in p2p; with pull or a server ignored for negotiation (2.6)",
    "crl-verify": "a file, re-read when it changes (not the 'dir' form)",
    "data-ciphers": "AEAD ciphers only (AES-128/192/256-GCM, CHACHA20-POLY1305)",
    "data-ciphers-fallback": "AEAD ciphers only",
    "ncp-ciphers": "AEAD ciphers only",
    "mssfix": "0, or at least 576; computed for openvpn 2.6's DATA_V2 overhead (24 bytes)",
    "dev": "tun devices only",
    "dev-type": "tun only",
    "down": "needs script-security 2",
    "dhcp-option": "handed to the up script as foreign_option_N (as openvpn on Linux)",
    "dns": "handed to the up script as dns_* variables (as openvpn on Linux)",
    "management": "TCP or unix socket; a client's offers state, status, signal, bytecount",
    "user": "server only, for now",
    "group": "server only, for now",
    "tls-verify": "server only, for now",
    "persist-tun": "client and p2p; ignored (logged) on a server",
    "ping-exit": "client and p2p",
    "proto": "UDP only (udp, udp4, udp6)",
    "pull-filter": "client only",
    "redirect-gateway": "client and p2p (a server pushes it)",
    "remote": "UDP only",
    "rcvbuf": "the UDP socket's (0: the kernel's default); a client applies a pushed one too",
    "sndbuf": "the UDP socket's (0: the kernel's default); a client applies a pushed one too",
    "reneg-bytes": "counted from the data plane's link counters, read every second",
    "reneg-pkts": "counted from the data plane's link counters, read every second",
    "reneg-sec": "one argument (the server's random lower bound is not supported)",
    "route-nopull": "client only",
    "route-up": "needs script-security 2",
    "status": "a client or p2p endpoint writes openvpn's OpenVPN STATISTICS report",
    "status-version": "a server's; ignored (logged) on a client, as openvpn does",
    "tls-cipher": "OpenSSL cipher names",
    "tls-ciphersuites": "OpenSSL names",
    "tls-groups": "OpenSSL names",
    "topology": "a server needs 'topology subnet' written out (openvpn's default is net30)",
    "up": "needs script-security 2",
}


def _limit(name: str) -> str:
    if name in SERVER_MODE_ONLY:
        return "server only (needs mode server, as in openvpn)"
    return _LIMITS.get(name, "")


def option_table() -> list[OptionEntry]:
    """Every option the parser knows, sorted by name, with its one outcome."""
    rows = [OptionEntry(n, Outcome.SUPPORTED, _limit(n), _FIELDS[n]) for n in HANDLERS]
    rows += [OptionEntry(n, Outcome.REFUSED, r) for n, r in _REFUSED.items()]
    rows += [OptionEntry(n, Outcome.IGNORED, r) for n, r in IGNORED_OPTIONS.items()]
    return sorted(rows, key=lambda row: row.name)


class Parser:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ignore_unknown: set[str] = set()
        self.depth = 0
        self.tls_auth_direction_given = False
        self.cd_seen = False
        self.errors: list[ConfigError] = []

    # --------------------------------------------------------- helpers

    def run(self, directives: Iterable[Directive]) -> None:
        """Apply every directive; an error is kept and parsing goes on with the next one."""
        for d in directives:
            try:
                self.apply(d)
            except ConfigErrors as many:
                self.errors += many.errors
            except ConfigError as exc:
                self.errors.append(exc)

    def apply(self, d: Directive) -> None:
        name = d.name
        if name in _REFUSED:
            option, reason = _refusal(d)
            raise ConfigError(reason, option, d.where)
        if name in IGNORED_OPTIONS:
            self.cfg.ignored.setdefault(name, d.where)
            return
        entry = HANDLERS.get(name)
        if entry is None:
            if name in self.ignore_unknown:
                self.cfg.ignored.setdefault(name, d.where)
                return
            raise ConfigError("unknown or unsupported option", name, d.where)
        min_args, max_args, handler = entry
        if d.inline and name not in INLINE_TAGS:
            raise ConfigError("cannot be given as an inline block", name, d.where)
        if not d.inline and not min_args <= len(d.args) <= max_args:
            raise ConfigError(arity(min_args, max_args, len(d.args)), name, d.where)
        self.cfg.locations[name] = d.where
        handler(self, d)

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else self.cfg.directory / p

    def read(self, d: Directive, index: int = 0) -> tuple[bytes, Path | None]:
        """The content of a file argument or inline block."""
        if d.inline:
            return d.args[0].encode(), None
        p = self.path(d.args[index])
        try:
            return p.read_bytes(), p
        except OSError as exc:
            raise ConfigError(f"cannot read {p}: {exc.strerror}", d.name, d.where) from None
        except ValueError:  # a NUL byte in the name
            raise ConfigError("bad file name", d.name, d.where) from None


def arity(lo: int, hi: int, got: int) -> str:
    want = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return f"takes {want} argument{'s' if hi != 1 else ''}, got {got}"


def int_arg(d: Directive, value: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise ConfigError(f"{value!r} is not a number", d.name, d.where) from None
    if not lo <= n <= hi:
        raise ConfigError(f"{n} is out of range ({lo}..{hi})", d.name, d.where)
    return n


def port_arg(d: Directive, value: str) -> int:
    return int_arg(d, value, 1, 65535) if value != "0" else 0


def _flag(attr: str, value: object = True) -> Handler:
    def handler(p: Parser, d: Directive) -> None:
        setattr(p.cfg, attr, value)

    return handler


# The role options act through the role finish derives from them.
_ROLE_FIELDS = {"client": ("role",), "pull": ("role",), "mode": ("role",)}


def _register_flags() -> None:
    for name, attr in (
        ("float", "float"),
        ("remote-random", "remote_random"),
        ("persist-tun", "persist_tun"),
        ("client", "client"),
        ("pull", "pull"),
        ("tls-client", "tls_client"),
        ("tls-server", "tls_server"),
        ("client-to-client", "client_to_client"),
        ("duplicate-cn", "duplicate_cn"),
        ("username-as-common-name", "username_as_common_name"),
        ("ccd-exclusive", "ccd_exclusive"),
        ("route-nopull", "route_nopull"),
    ):
        handles(name, fields=_ROLE_FIELDS.get(name, (attr,)))(_flag(attr))
    handles("nobind", fields=("bind",))(_flag("bind", False))
    handles("bind", fields=("bind",))(_flag("bind", True))
    handles("log-append", min_args=1, max_args=1, fields=("log", "log_append"))(_set_log)
    handles("log", min_args=1, max_args=1, fields=("log", "log_append"))(_set_log)


def _set_log(p: Parser, d: Directive) -> None:
    p.cfg.log = p.path(d.args[0])
    p.cfg.log_append = d.name == "log-append"


def _int_option(name: str, attr: str, lo: int = 0, hi: int = 2**31 - 1) -> None:
    def handler(p: Parser, d: Directive) -> None:
        setattr(p.cfg, attr, int_arg(d, d.args[0], lo, hi))

    handles(name, min_args=1, max_args=1, fields=(attr,))(handler)


def _str_option(name: str, attr: str) -> None:
    def handler(p: Parser, d: Directive) -> None:
        setattr(p.cfg, attr, d.args[0])

    handles(name, min_args=1, max_args=1, fields=(attr,))(handler)


def _path_option(name: str, attr: str) -> None:
    def handler(p: Parser, d: Directive) -> None:
        setattr(p.cfg, attr, p.path(d.args[0]))

    handles(name, min_args=1, max_args=1, fields=(attr,))(handler)


def _choice_option(name: str, attr: str, choices: tuple[str, ...], max_args: int = 1) -> None:
    def handler(p: Parser, d: Directive) -> None:
        if d.args[0] not in choices:
            raise ConfigError(f"must be {' or '.join(choices)}, not {d.args[0]!r}", d.name, d.where)
        setattr(p.cfg, attr, d.args[0])

    handles(name, min_args=1, max_args=max_args, fields=_ROLE_FIELDS.get(name, (attr,)))(handler)


_TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


def _register_simple() -> None:
    for name, attr, choices, max_args in (
        ("mode", "mode", ("p2p", "server"), 1),
        ("topology", "topology", ("net30", "p2p", "subnet"), 1),
        ("tls-version-min", "tls_version_min", _TLS_VERSIONS, 2),  # [or-highest]
        ("tls-version-max", "tls_version_max", _TLS_VERSIONS, 1),
        ("remote-cert-tls", "remote_cert_tls", ("server", "client"), 1),
        ("verify-client-cert", "verify_client_cert", ("none", "optional", "require"), 1),
    ):
        _choice_option(name, attr, choices, max_args)
    for name, attr, lo, hi in (
        ("ping", "ping", 0, 2**31 - 1),
        ("ping-restart", "ping_restart", 0, 2**31 - 1),
        ("ping-exit", "ping_exit", 0, 2**31 - 1),
        ("hand-window", "hand_window", 1, 2**31 - 1),
        ("tran-window", "tran_window", 1, 2**31 - 1),
        ("verb", "verb", 0, 11),
        ("max-clients", "max_clients", 1, 2**31 - 1),
        ("connect-retry-max", "connect_retry_max", 0, 2**31 - 1),
        ("nice", "nice", -20, 19),
        ("txqueuelen", "txqueuelen", 0, 2**31 - 1),
        ("sndbuf", "sndbuf", 0, 2**31 - 1),
        ("rcvbuf", "rcvbuf", 0, 2**31 - 1),
        ("reneg-bytes", "reneg_bytes", 0, 2**63 - 1),
        ("reneg-pkts", "reneg_pkts", 0, 2**31 - 1),
        ("script-security", "script_security", 0, 3),
        ("status-version", "status_version", 1, 3),
        ("tls-mtu", "tls_mtu", 512, 1500),
    ):
        _int_option(name, attr, lo, hi)
    for name, attr in (
        ("user", "user"),
        ("group", "group"),
        ("tls-cipher", "tls_cipher"),
        ("tls-ciphersuites", "tls_ciphersuites"),
        ("tls-groups", "tls_groups"),
        ("ecdh-curve", "ecdh_curve"),
        ("remote-cert-eku", "remote_cert_eku"),
        ("client-connect", "client_connect"),
        ("client-disconnect", "client_disconnect"),
        ("learn-address", "learn_address"),
        ("tls-verify", "tls_verify"),
        ("up", "up"),
        ("down", "down"),
        ("route-up", "route_up"),
        ("route-gateway", "route_gateway"),
    ):
        _str_option(name, attr)
    for name, attr in (
        ("writepid", "writepid"),
        ("client-config-dir", "client_config_dir"),
    ):
        _path_option(name, attr)


_register_flags()
_register_simple()



# Options that act in some roles only, and where they would silently do nothing.
# openvpn refuses these without mode server (options_postprocess_verify_ce):
SERVER_MODE_ONLY = (
    "ifconfig-pool", "ifconfig-pool-persist", "ifconfig-ipv6-pool", "max-clients",
    "client-connect", "client-disconnect", "client-config-dir", "ccd-exclusive",
    "client-to-client", "duplicate-cn", "username-as-common-name", "auth-user-pass-verify",
    "learn-address", "push",
)  # fmt: skip
