"""OpenVPN configuration files: the supported subset, a one-line error for the rest.

Syntax, defaults and the `server`/`keepalive` expansions follow openvpn 2.6
(options.c: parse_line, init_options, add_option; helper.c). What the DCO-style
data path cannot do (tap, TCP, compression, fragment, non-AEAD ciphers, a
server without `topology subnet`) is refused with `file:line: option: reason`.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from xdp_ovpn.loader.maps import DEFAULT_CONTROL_LIMITS, ControlLimits
from xdp_ovpn.proto.constants import (
    AEAD_CIPHERS,
    DEFAULT_DATA_CIPHERS,
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    DEFAULT_TLS_MTU,
)

OPENVPN_PORT = 1194
INLINE_TAGS = frozenset(
    {
        "ca",
        "cert",
        "key",
        "dh",
        "tls-auth",
        "tls-crypt",
        "tls-crypt-v2",
        "crl-verify",
        "peer-fingerprint",
        "auth-user-pass",
        "extra-certs",
        "secret",
        "pkcs12",
        "http-proxy-user-pass",
        "connection",
    }
)
_MAX_INCLUDE_DEPTH = 10


class ConfigError(Exception):
    """A config option that is wrong or cannot work here; str() is one line."""

    def __init__(self, reason: str, option: str = "", where: Location | None = None) -> None:
        self.reason = " ".join(reason.split())
        self.option = option
        self.where = where
        prefix = f"{where}: " if where else ""
        head = f"{option}: " if option else ""
        super().__init__(f"{prefix}{head}{self.reason}")


@dataclass(frozen=True)
class Location:
    """Where an option was written: a file and line, or a command-line position."""

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class Role(enum.StrEnum):
    SERVER = "server"  # mode server + tls-server: many clients, pool, push
    CLIENT = "client"  # tls-client + pull
    P2P = "p2p"  # TLS peer-to-peer: one peer, no push


class Wrapping(enum.StrEnum):
    NONE = "none"
    TLS_AUTH = "tls-auth"
    TLS_CRYPT = "tls-crypt"
    TLS_CRYPT_V2 = "tls-crypt-v2"


@dataclass(frozen=True)
class Remote:
    host: str
    port: int
    proto: str  # udp, udp4 or udp6


@dataclass(frozen=True)
class Route:
    """`route` / `route-ipv6`: a network (prefix form), optional gateway and metric."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: str | None = None
    metric: int | None = None


@dataclass(frozen=True)
class TLSWrap:
    """Control-channel wrapping: the key file's text and, for tls-auth, the direction."""

    mode: Wrapping
    key: bytes
    direction: int | None = None  # tls-auth only: 0, 1 or None (bidirectional)
    path: Path | None = None  # None when inline
    force_cookie: bool = True  # tls-crypt-v2 server: force-cookie (default) / allow-noncookie


@dataclass(frozen=True)
class Management:
    address: str
    port: str  # a port number, or "unix" for a socket path in `address`
    password_file: Path | None = None


@dataclass
class Config:
    """A parsed, expanded and checked configuration (openvpn's defaults where unset)."""

    source: str = "<config>"
    directory: Path = field(default_factory=Path.cwd)  # base of relative paths (`cd`)
    role: Role = Role.P2P
    # mode and TLS side, as openvpn has them after its helpers ran
    mode: str = "p2p"  # p2p | server
    tls_server: bool = False
    tls_client: bool = False
    pull: bool = False
    client: bool = False
    # device
    dev: str = "tun"  # "tun" = dynamic name (tun0, tun1, ...); "tun3"/"vpn0" = fixed
    dev_type: str = "tun"
    tun_mtu: int = 1500
    mssfix: int = 1492  # 0 = off
    mssfix_mode: str = ""  # "", "mtu" or "fixed"
    txqueuelen: int | None = None
    # transport
    proto: str = "udp"
    local: str | None = None
    lport: int = OPENVPN_PORT
    rport: int = OPENVPN_PORT
    remotes: list[Remote] = field(default_factory=list)
    remote_random: bool = False
    connect_retry: int = 1
    connect_retry_max: int = 300
    bind: bool = True
    float: bool = False
    sndbuf: int | None = None
    rcvbuf: int | None = None
    # addressing
    topology: str = "net30"  # openvpn 2.6's default; a server is always subnet here
    ifconfig: tuple[str, str] | None = None  # local, remote-or-netmask
    ifconfig_ipv6: tuple[ipaddress.IPv6Interface, ipaddress.IPv6Address] | None = None
    server: ipaddress.IPv4Network | None = None
    server_nopool: bool = False
    server_ipv6: ipaddress.IPv6Network | None = None
    ifconfig_pool: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None = None
    ifconfig_pool_netmask: ipaddress.IPv4Address | None = None
    ifconfig_ipv6_pool: ipaddress.IPv6Network | None = None  # base address/netbits
    ifconfig_ipv6_pool_base: ipaddress.IPv6Address | None = None
    route_gateway: str | None = None
    routes: list[Route] = field(default_factory=list)
    routes_ipv6: list[Route] = field(default_factory=list)
    redirect_gateway: tuple[str, ...] | None = None  # flags, e.g. ("def1", "bypass-dhcp")
    push: list[str] = field(default_factory=list)
    client_to_client: bool = False
    duplicate_cn: bool = False
    max_clients: int = 1024
    client_config_dir: Path | None = None
    ccd_exclusive: bool = False
    ifconfig_pool_persist: Path | None = None
    ifconfig_pool_persist_seconds: int = 600
    # timers
    keepalive: tuple[int, int] | None = None
    ping: int = 0
    ping_restart: int = 0
    ping_exit: int = 0
    explicit_exit_notify: int = 0
    reneg_sec: int = 3600
    reneg_sec_min: int | None = None
    reneg_bytes: int | None = None
    reneg_pkts: int | None = None
    hand_window: int = 60
    tran_window: int = 3600
    replay_window: int = DEFAULT_REPLAY_WINDOW
    replay_time: int = DEFAULT_REPLAY_TIME
    tls_mtu: int = DEFAULT_TLS_MTU
    # xdp-ovpn's own: the XDP classifier's buckets for control packets from non-peers
    xdp_control_limit: ControlLimits | None = DEFAULT_CONTROL_LIMITS
    # data channel
    data_ciphers: tuple[str, ...] = DEFAULT_DATA_CIPHERS
    data_ciphers_fallback: str | None = None
    cipher: str | None = None
    auth: str = "SHA1"
    compress_migrate: bool = False
    # control channel and certificates
    tls_wrap: TLSWrap | None = None
    key_direction: int | None = None
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    extra_certs: bytes | None = None
    dh: bytes | None = None  # None also for `dh none`
    crl: bytes | None = None
    crl_path: Path | None = None  # re-read on each handshake, as openvpn does
    tls_version_min: str | None = None
    tls_version_max: str | None = None
    tls_cipher: str | None = None
    tls_ciphersuites: str | None = None
    tls_groups: str | None = None
    remote_cert_tls: str | None = None
    remote_cert_ku: tuple[int, ...] | None = None
    remote_cert_eku: str | None = None
    verify_x509_name: tuple[str, str] | None = None  # (name, subject|name|name-prefix)
    peer_fingerprints: list[bytes] = field(default_factory=list)
    auth_user_pass: tuple[str, str] | None = None
    push_peer_info: bool = False
    # server features (stored for the server-features work)
    verify_client_cert: str = "require"
    username_as_common_name: bool = False
    auth_user_pass_verify: tuple[str, str] | None = None  # (command, via-env|via-file)
    client_connect: str | None = None
    client_disconnect: str | None = None
    learn_address: str | None = None
    tls_verify: str | None = None
    up: str | None = None
    down: str | None = None
    route_up: str | None = None
    script_security: int = 1
    # process
    writepid: Path | None = None
    log: Path | None = None
    log_append: bool = False
    verb: int = 1
    user: str | None = None
    group: str | None = None
    persist_key: bool = False
    persist_tun: bool = False
    status: Path | None = None
    status_seconds: int = 60
    status_version: int = 1
    management: Management | None = None
    # xdp-ovpn's own (stock openvpn rejects them): where and how XDP attaches
    xdp_interfaces: list[str] = field(default_factory=list)
    xdp_mode: str | None = None
    # bookkeeping: where each option was set, what was ignored, notes for the log
    locations: dict[str, Location] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def wrapping(self) -> Wrapping:
        return self.tls_wrap.mode if self.tls_wrap else Wrapping.NONE

    @property
    def dev_name_fixed(self) -> bool:
        """True for `dev tun0` / `dev vpn`, False for the dynamic `dev tun`."""
        return self.dev != self.dev_type

    def tun_ipv4(self) -> tuple[ipaddress.IPv4Interface, ipaddress.IPv4Address | None] | None:
        """The TUN's IPv4 address and prefix, plus the peer address in net30/p2p style."""
        if self.ifconfig is None:
            return None
        local, other = self.ifconfig
        if self.topology == "subnet":
            return ipaddress.IPv4Interface(f"{local}/{other}"), None
        return ipaddress.IPv4Interface(f"{local}/32"), ipaddress.IPv4Address(other)


# ---------------------------------------------------------------- tokenizing


@dataclass(frozen=True)
class Directive:
    """One option with its arguments; `inline` holds a <tag> block's text."""

    name: str
    args: tuple[str, ...]
    where: Location
    inline: bool = False


def split_line(line: str, where: Location) -> list[str]:
    """Split one config line into words like openvpn's parse_line: quotes, backslashes,
    comments (`#` or `;` where a word would start)."""
    words: list[str] = []
    word: list[str] = []
    quote = ""  # '"' or "'" while inside quotes
    in_word = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quote != "'" and i + 1 < len(line):
            nxt = line[i + 1]
            if nxt not in '\\" \t':
                raise ConfigError("bad backslash usage (write \\\\ for a backslash)", where=where)
            word.append(nxt)
            in_word = True
            i += 2
            continue
        if quote:
            if ch == quote:
                quote = ""
                words.append("".join(word))
                word, in_word = [], False
            else:
                word.append(ch)
        elif ch.isspace():
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif not in_word and ch in "#;":
            break
        elif not in_word and ch in "\"'":
            quote = ch
        else:
            word.append(ch)
            in_word = True
        i += 1
    if quote == '"':
        raise ConfigError('no closing quotation (")', where=where)
    if quote or in_word:
        words.append("".join(word))
    return words


def read_directives(text: str, file: str) -> list[Directive]:
    """Turn config text into directives, collecting <tag>...</tag> inline blocks."""
    out: list[Directive] = []
    lines = text.removeprefix("\ufeff").splitlines()
    n = 0
    while n < len(lines):
        raw = lines[n]
        n += 1
        where = Location(file, n)
        stripped = raw.strip()
        if stripped.startswith("<") and stripped.endswith(">") and not stripped.startswith("</"):
            tag = stripped[1:-1]
            end = f"</{tag}>"
            body: list[str] = []
            while n < len(lines) and lines[n].strip() != end:
                body.append(lines[n])
                n += 1
            if n >= len(lines):
                raise ConfigError(f"inline block <{tag}> has no {end}", tag, where)
            n += 1
            out.append(Directive(tag, ("\n".join(body) + "\n",), where, inline=True))
            continue
        words = split_line(raw, where)
        if not words:
            continue
        name = words[0][2:] if words[0].startswith("--") else words[0]
        out.append(Directive(name, tuple(words[1:]), where))
    return out


def directives_from_args(argv: Sequence[str]) -> list[Directive]:
    """`--option value ...` command-line words as directives (openvpn accepts both forms)."""
    out: list[Directive] = []
    for i, word in enumerate(argv, start=1):
        if word.startswith("--"):
            out.append(Directive(word[2:], (), Location("command line", i)))
        elif not out:
            raise ConfigError(
                f"expected an --option, got {word!r}", where=Location("command line", i)
            )
        else:
            last = out[-1]
            out[-1] = Directive(last.name, (*last.args, word), last.where)
    return out


# ---------------------------------------------------------------- option table

Handler = Callable[["_Parser", Directive], None]
_HANDLERS: dict[str, tuple[int, int, Handler]] = {}


def _option(*names: str, min_args: int = 0, max_args: int = 0) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            _HANDLERS[name] = (min_args, max_args, fn)
        return fn

    return register


# Accepted and without effect here: logging niceties, Windows/DNS-client knobs,
# and behaviours the xdp-ovpn process has anyway.
IGNORED_OPTIONS = frozenset(
    {
        "resolv-retry",
        "mute-replay-warnings",
        "mute",
        "persist-local-ip",
        "persist-remote-ip",
        "auth-nocache",
        "tun-ipv6",
        "ping-timer-rem",
        "fast-io",
        "suppress-timestamps",
        "machine-readable-output",
        "comp-noadapt",
        "auth-retry",
        "route-delay",
        "route-method",
        "ip-win32",
        "block-outside-dns",
        "register-dns",
        "server-poll-timeout",
        "connect-timeout",
        "connect-retry-max",
        "ecdh-curve",
        "tls-timeout",
        "setenv",
        "setenv-safe",
        "tls-exit",
        "remap-usr1",
        "nice",
        "dev-node",
        "route-nopull",
        "allow-pull-fqdn",
        "push-reset",
        "single-session",
        "opt-verify",
        "disable-dco",  # we are our own data path either way
    }
)

_AEAD_HINT = "the DCO-style data path does AES-128/192/256-GCM and CHACHA20-POLY1305 only"
# Options openvpn has that cannot work with a DCO-style data path.
_REFUSED: dict[str, str] = {
    "fragment": "not supported by the DCO-style data path; lower tun-mtu or use mssfix",
    "comp-lzo": "compression is not supported by the DCO-style data path "
    "(openvpn 2.6 disables DCO for it too); remove it, or use 'compress migrate' on a server",
    "secret": "static-key mode is not supported; use TLS (ca/cert/key)",
    "connection": "<connection> blocks are not supported; use several 'remote' lines",
    "daemon": "xdp-ovpn runs in the foreground; use a service manager",
    "shaper": "not supported by the DCO-style data path; use tc",
    "server-bridge": "layer 2 (tap) is not supported: the DCO-style data path is tun only",
    "socks-proxy": "needs TCP, which is not supported yet",
    "http-proxy": "needs TCP, which is not supported yet",
    "pkcs12": "not supported; give ca, cert and key in PEM",
}


class _Parser:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.ignore_unknown: set[str] = set()
        self.depth = 0
        self.tls_auth_direction_given = False
        self.cd_seen = False

    # --------------------------------------------------------- helpers

    def run(self, directives: Iterable[Directive]) -> None:
        for d in directives:
            self.apply(d)

    def apply(self, d: Directive) -> None:
        name = d.name
        if name in _REFUSED:
            raise ConfigError(_REFUSED[name], name, d.where)
        if name in IGNORED_OPTIONS:
            self.cfg.ignored.append(name)
            return
        entry = _HANDLERS.get(name)
        if entry is None:
            if name in self.ignore_unknown:
                self.cfg.ignored.append(name)
                return
            raise ConfigError("unknown or unsupported option", name, d.where)
        min_args, max_args, handler = entry
        if d.inline and name not in INLINE_TAGS:
            raise ConfigError("cannot be given as an inline block", name, d.where)
        if not d.inline and not min_args <= len(d.args) <= max_args:
            raise ConfigError(_arity(min_args, max_args, len(d.args)), name, d.where)
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


def _arity(lo: int, hi: int, got: int) -> str:
    want = f"{lo}" if lo == hi else f"{lo} to {hi}"
    return f"takes {want} argument{'s' if hi != 1 else ''}, got {got}"


def _int(d: Directive, value: str, lo: int = 0, hi: int = 2**31 - 1) -> int:
    try:
        n = int(value, 10)
    except ValueError:
        raise ConfigError(f"{value!r} is not a number", d.name, d.where) from None
    if not lo <= n <= hi:
        raise ConfigError(f"{n} is out of range ({lo}..{hi})", d.name, d.where)
    return n


def _port(d: Directive, value: str) -> int:
    return _int(d, value, 1, 65535) if value != "0" else 0


def _flag(attr: str, value: object = True) -> Handler:
    def handler(p: _Parser, d: Directive) -> None:
        setattr(p.cfg, attr, value)

    return handler


def _register_flags() -> None:
    for name, attr in (
        ("float", "float"),
        ("remote-random", "remote_random"),
        ("persist-key", "persist_key"),
        ("persist-tun", "persist_tun"),
        ("client", "client"),
        ("pull", "pull"),
        ("tls-client", "tls_client"),
        ("tls-server", "tls_server"),
        ("client-to-client", "client_to_client"),
        ("duplicate-cn", "duplicate_cn"),
        ("username-as-common-name", "username_as_common_name"),
        ("ccd-exclusive", "ccd_exclusive"),
        ("push-peer-info", "push_peer_info"),
    ):
        _option(name)(_flag(attr))
    _option("nobind")(_flag("bind", False))
    _option("bind")(_flag("bind", True))
    _option("log-append", min_args=1, max_args=1)(_set_log)
    _option("log", min_args=1, max_args=1)(_set_log)


def _set_log(p: _Parser, d: Directive) -> None:
    p.cfg.log = p.path(d.args[0])
    p.cfg.log_append = d.name == "log-append"


def _int_option(name: str, attr: str, lo: int = 0, hi: int = 2**31 - 1) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        setattr(p.cfg, attr, _int(d, d.args[0], lo, hi))

    _option(name, min_args=1, max_args=1)(handler)


def _str_option(name: str, attr: str) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        setattr(p.cfg, attr, d.args[0])

    _option(name, min_args=1, max_args=1)(handler)


def _path_option(name: str, attr: str) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        setattr(p.cfg, attr, p.path(d.args[0]))

    _option(name, min_args=1, max_args=1)(handler)


def _choice_option(name: str, attr: str, choices: tuple[str, ...], max_args: int = 1) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        if d.args[0] not in choices:
            raise ConfigError(f"must be {' or '.join(choices)}, not {d.args[0]!r}", d.name, d.where)
        setattr(p.cfg, attr, d.args[0])

    _option(name, min_args=1, max_args=max_args)(handler)


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
        ("reneg-bytes", "reneg_bytes", 0, 2**62),
        ("reneg-pkts", "reneg_pkts", 0, 2**62),
        ("verb", "verb", 0, 11),
        ("max-clients", "max_clients", 1, 2**31 - 1),
        ("sndbuf", "sndbuf", 0, 2**31 - 1),
        ("rcvbuf", "rcvbuf", 0, 2**31 - 1),
        ("txqueuelen", "txqueuelen", 0, 2**31 - 1),
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


# ---------------------------------------------------------------- structure


@_option("config", min_args=1, max_args=1)
def _config(p: _Parser, d: Directive) -> None:
    if p.depth >= _MAX_INCLUDE_DEPTH:
        raise ConfigError("config files nested too deeply", d.name, d.where)
    text, path = p.read(d)
    if not p.cd_seen and path is not None:
        # Like `load`: files named in a config resolve against its directory.
        p.cfg.directory = path.parent
    p.depth += 1
    try:
        p.run(read_directives(text.decode("utf-8", "replace"), str(path)))
    finally:
        p.depth -= 1


@_option("cd", min_args=1, max_args=1)
def _cd(p: _Parser, d: Directive) -> None:
    target = p.path(d.args[0])
    if not target.is_dir():
        raise ConfigError(f"{target} is not a directory", d.name, d.where)
    p.cfg.directory = target
    p.cd_seen = True


@_option("ignore-unknown-option", min_args=1, max_args=64)
def _ignore_unknown(p: _Parser, d: Directive) -> None:
    p.ignore_unknown.update(d.args)


# ---------------------------------------------------------------- device


_TAP_REASON = "layer 2 (tap) is not supported: the DCO-style data path is tun only"


@_option("dev", min_args=1, max_args=1)
def _dev(p: _Parser, d: Directive) -> None:
    name = d.args[0]
    if name.startswith("tap"):
        raise ConfigError(_TAP_REASON, f"dev {name}", d.where)
    if name.startswith("null"):
        raise ConfigError("a null device carries no traffic; use tun", f"dev {name}", d.where)
    p.cfg.dev = name


@_option("dev-type", min_args=1, max_args=1)
def _dev_type(p: _Parser, d: Directive) -> None:
    if d.args[0] != "tun":
        raise ConfigError(_TAP_REASON, f"dev-type {d.args[0]}", d.where)


@_option("tun-mtu", min_args=1, max_args=2)
def _tun_mtu(p: _Parser, d: Directive) -> None:
    p.cfg.tun_mtu = _int(d, d.args[0], 576, 65535)


@_option("mssfix", min_args=0, max_args=2)
def _mssfix(p: _Parser, d: Directive) -> None:
    p.cfg.mssfix = _int(d, d.args[0], 0, 65535) if d.args else 1492
    mode = d.args[1] if len(d.args) > 1 else ""
    if mode not in ("", "mtu", "fixed"):
        raise ConfigError(
            f"second argument must be 'mtu' or 'fixed', not {mode!r}", d.name, d.where
        )
    p.cfg.mssfix_mode = mode


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


@_option("proto", min_args=1, max_args=1)
def _proto(p: _Parser, d: Directive) -> None:
    p.cfg.proto = _check_proto(d, d.args[0], "proto")


@_option("port", "lport", "rport", min_args=1, max_args=1)
def _ports(p: _Parser, d: Directive) -> None:
    port = _port(d, d.args[0])
    if d.name in ("port", "lport"):
        p.cfg.lport = port
    if d.name in ("port", "rport"):
        p.cfg.rport = port


@_option("local", min_args=1, max_args=1)
def _local(p: _Parser, d: Directive) -> None:
    p.cfg.local = d.args[0]


# A remote's port and proto default to rport/proto at the end of parsing, like openvpn.
_UNSET_PORT = -1


@_option("remote", min_args=1, max_args=3)
def _remote(p: _Parser, d: Directive) -> None:
    port = _port(d, d.args[1]) if len(d.args) > 1 else _UNSET_PORT
    proto = _check_proto(d, d.args[2], "remote") if len(d.args) > 2 else ""
    p.cfg.remotes.append(Remote(d.args[0], port, proto))


@_option("connect-retry", min_args=1, max_args=2)
def _connect_retry(p: _Parser, d: Directive) -> None:
    p.cfg.connect_retry = _int(d, d.args[0])
    if len(d.args) > 1:
        p.cfg.connect_retry_max = _int(d, d.args[1])


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


@_option("ifconfig", min_args=2, max_args=2)
def _ifconfig(p: _Parser, d: Directive) -> None:
    local, other = (str(_ipv4(d, a)) for a in d.args)
    p.cfg.ifconfig = (local, other)


@_option("ifconfig-ipv6", min_args=2, max_args=2)
def _ifconfig_ipv6(p: _Parser, d: Directive) -> None:
    local = _ipv6_iface(d, d.args[0] if "/" in d.args[0] else d.args[0] + "/64")
    if not 64 <= local.network.prefixlen <= 124:
        raise ConfigError("/netbits must be between 64 and 124", d.name, d.where)
    remote = _ipv6_iface(d, d.args[1]).ip
    p.cfg.ifconfig_ipv6 = (local, remote)


@_option("server", min_args=2, max_args=3)
def _server(p: _Parser, d: Directive) -> None:
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


@_option("server-ipv6", min_args=1, max_args=1)
def _server_ipv6(p: _Parser, d: Directive) -> None:
    iface = _ipv6_iface(d, d.args[0])
    if not 64 <= iface.network.prefixlen <= 124:
        raise ConfigError("the network must be between /64 and /124", d.name, d.where)
    p.cfg.server_ipv6 = iface.network


@_option("ifconfig-pool", min_args=2, max_args=3)
def _ifconfig_pool(p: _Parser, d: Directive) -> None:
    start, end = _ipv4(d, d.args[0]), _ipv4(d, d.args[1])
    if end < start:
        raise ConfigError("the pool ends before it starts", d.name, d.where)
    p.cfg.ifconfig_pool = (start, end)
    if len(d.args) > 2:
        p.cfg.ifconfig_pool_netmask = _ipv4(d, d.args[2])


@_option("ifconfig-ipv6-pool", min_args=1, max_args=1)
def _ifconfig_ipv6_pool(p: _Parser, d: Directive) -> None:
    iface = _ipv6_iface(d, d.args[0])
    if not 64 <= iface.network.prefixlen <= 124:
        raise ConfigError("the network must be between /64 and /124", d.name, d.where)
    p.cfg.ifconfig_ipv6_pool = iface.network
    p.cfg.ifconfig_ipv6_pool_base = iface.ip


@_option("ifconfig-pool-persist", min_args=1, max_args=2)
def _pool_persist(p: _Parser, d: Directive) -> None:
    p.cfg.ifconfig_pool_persist = p.path(d.args[0])
    if len(d.args) > 1:
        p.cfg.ifconfig_pool_persist_seconds = _int(d, d.args[1])


@_option("route", min_args=1, max_args=4)
def _route(p: _Parser, d: Directive) -> None:
    mask = d.args[1] if len(d.args) > 1 and d.args[1] != "default" else "255.255.255.255"
    gateway = d.args[2] if len(d.args) > 2 and d.args[2] != "default" else None
    metric = _int(d, d.args[3]) if len(d.args) > 3 else None
    net = _ipv4_net(d, d.args[0], mask)
    p.cfg.routes.append(Route(net, gateway, metric))


@_option("route-ipv6", min_args=1, max_args=3)
def _route_ipv6(p: _Parser, d: Directive) -> None:
    try:
        net = ipaddress.IPv6Network(d.args[0], strict=False)
    except ValueError:
        raise ConfigError(f"{d.args[0]!r} is not an IPv6 network", d.name, d.where) from None
    gateway = d.args[1] if len(d.args) > 1 else None
    metric = _int(d, d.args[2]) if len(d.args) > 2 else None
    p.cfg.routes_ipv6.append(Route(net, gateway, metric))


_REDIRECT_FLAGS = frozenset(
    {"local", "autolocal", "def1", "bypass-dhcp", "bypass-dns", "block-local", "ipv6", "!ipv4"}
)


@_option("redirect-gateway", min_args=0, max_args=8)
def _redirect_gateway(p: _Parser, d: Directive) -> None:
    for flag in d.args:
        if flag not in _REDIRECT_FLAGS:
            raise ConfigError(f"unknown flag {flag!r}", d.name, d.where)
    p.cfg.redirect_gateway = d.args


@_option("push", min_args=1, max_args=1)
def _push(p: _Parser, d: Directive) -> None:
    p.cfg.push.append(d.args[0])


# ---------------------------------------------------------------- timers


@_option("keepalive", min_args=2, max_args=2)
def _keepalive(p: _Parser, d: Directive) -> None:
    interval, timeout = _int(d, d.args[0], 1), _int(d, d.args[1], 1)
    if interval * 2 > timeout:
        raise ConfigError(
            f"the timeout ({timeout}) must be at least twice the interval ({interval})",
            d.name,
            d.where,
        )
    p.cfg.keepalive = (interval, timeout)


@_option("explicit-exit-notify", min_args=0, max_args=1)
def _exit_notify(p: _Parser, d: Directive) -> None:
    p.cfg.explicit_exit_notify = _int(d, d.args[0]) if d.args else 1


@_option("reneg-sec", min_args=1, max_args=2)
def _reneg_sec(p: _Parser, d: Directive) -> None:
    p.cfg.reneg_sec = _int(d, d.args[0])
    if len(d.args) > 1:
        p.cfg.reneg_sec_min = _int(d, d.args[1])


@_option("replay-window", min_args=1, max_args=2)
def _replay_window(p: _Parser, d: Directive) -> None:
    # Bounds from openvpn's packet_id.h (MIN/MAX_SEQ_BACKTRACK, MIN/MAX_TIME_BACKTRACK).
    p.cfg.replay_window = _int(d, d.args[0], 0, 65536)
    if len(d.args) > 1:
        p.cfg.replay_time = _int(d, d.args[1], 0, 600)


@_option("xdp-control-limit", min_args=1, max_args=4)
def _xdp_control_limit(p: _Parser, d: Directive) -> None:
    """xdp-ovpn's own: SOURCE_RATE SOURCE_BURST GLOBAL_RATE GLOBAL_BURST, or `off`."""
    if d.args == ("off",):
        p.cfg.xdp_control_limit = None
        return
    if len(d.args) != 4:
        raise ConfigError("expected SOURCE_RATE SOURCE_BURST GLOBAL_RATE GLOBAL_BURST or off",
                          d.name, d.where)
    try:
        p.cfg.xdp_control_limit = ControlLimits(*(_int(d, arg) for arg in d.args))
    except ValueError as exc:
        raise ConfigError(str(exc), d.name, d.where) from None


# ---------------------------------------------------------------- data channel


def _cipher_name(name: str) -> str:
    return name.upper()


def _aead(d: Directive, name: str) -> str:
    norm = _cipher_name(name)
    if norm not in AEAD_CIPHERS:
        raise ConfigError(f"{name} is not an AEAD cipher; {_AEAD_HINT}", d.name, d.where)
    return norm


@_option("data-ciphers", "ncp-ciphers", min_args=1, max_args=1)
def _data_ciphers(p: _Parser, d: Directive) -> None:
    names = []
    for entry in d.args[0].split(":"):
        if entry.startswith("?"):
            # 2.6 optional entry: dropped when unavailable, as openvpn does.
            if _cipher_name(entry[1:]) in AEAD_CIPHERS:
                names.append(_cipher_name(entry[1:]))
        elif entry:
            names.append(_aead(d, entry))
    if not names:
        raise ConfigError("no usable cipher in the list", d.name, d.where)
    p.cfg.data_ciphers = tuple(dict.fromkeys(names))


@_option("data-ciphers-fallback", min_args=1, max_args=1)
def _data_ciphers_fallback(p: _Parser, d: Directive) -> None:
    p.cfg.data_ciphers_fallback = _aead(d, d.args[0])


@_option("cipher", min_args=1, max_args=1)
def _cipher(p: _Parser, d: Directive) -> None:
    # Checked in _finish: openvpn 2.6 ignores --cipher for negotiation with pull or a server.
    p.cfg.cipher = _cipher_name(d.args[0])


@_option("auth", min_args=1, max_args=1)
def _auth(p: _Parser, d: Directive) -> None:
    p.cfg.auth = d.args[0].upper()


@_option("compress", min_args=0, max_args=1)
def _compress(p: _Parser, d: Directive) -> None:
    # Even the stubs (compress, compress stub/stub-v2, comp-lzo no) put a compression
    # header on data packets; openvpn 2.6 turns DCO off for any compression setting except
    # `compress migrate` (dco.c: dco_check_option), so only that one is accepted.
    alg = d.args[0] if d.args else "stub"
    if alg != "migrate":
        raise ConfigError(
            "compression framing (stubs included) is not supported by the DCO-style data path; "
            "remove it, or use 'compress migrate' on a server",
            " ".join((d.name, *d.args)),
            d.where,
        )
    p.cfg.compress_migrate = True


@_option("allow-compression", min_args=1, max_args=1)
def _allow_compression(p: _Parser, d: Directive) -> None:
    if d.args[0] != "no":
        raise ConfigError(
            "compression is not supported by the DCO-style data path; use 'allow-compression no'",
            f"allow-compression {d.args[0]}",
            d.where,
        )


# ---------------------------------------------------------------- control channel


def _direction(d: Directive, value: str) -> int | None:
    if value in ("0", "1"):
        return int(value)
    if value == "bidirectional":
        return None
    raise ConfigError(f"key direction must be 0 or 1, not {value!r}", d.name, d.where)


def _set_wrap(p: _Parser, d: Directive, wrap: TLSWrap) -> None:
    if p.cfg.tls_wrap is not None and p.cfg.tls_wrap.mode != wrap.mode:
        raise ConfigError(f"cannot be combined with {p.cfg.tls_wrap.mode}", d.name, d.where)
    p.cfg.tls_wrap = wrap


@_option("tls-auth", min_args=1, max_args=2)
def _tls_auth(p: _Parser, d: Directive) -> None:
    key, path = p.read(d)
    explicit = len(d.args) > 1 and not d.inline
    # Without a direction argument, key-direction applies wherever it appears (see _finish).
    p.tls_auth_direction_given = explicit
    direction = _direction(d, d.args[1]) if explicit else None
    _set_wrap(p, d, TLSWrap(Wrapping.TLS_AUTH, key, direction, path))


@_option("key-direction", min_args=1, max_args=1)
def _key_direction(p: _Parser, d: Directive) -> None:
    p.cfg.key_direction = _direction(d, d.args[0])


@_option("tls-crypt", min_args=1, max_args=1)
def _tls_crypt(p: _Parser, d: Directive) -> None:
    key, path = p.read(d)
    _set_wrap(p, d, TLSWrap(Wrapping.TLS_CRYPT, key, None, path))


@_option("tls-crypt-v2", min_args=1, max_args=2)
def _tls_crypt_v2(p: _Parser, d: Directive) -> None:
    key, path = p.read(d)
    extra = d.args[1] if len(d.args) > 1 and not d.inline else "force-cookie"
    if extra not in ("force-cookie", "allow-noncookie"):
        raise ConfigError(f"unknown argument {extra!r}", d.name, d.where)
    wrap = TLSWrap(Wrapping.TLS_CRYPT_V2, key, None, path, extra == "force-cookie")
    _set_wrap(p, d, wrap)


def _pem_option(name: str, attr: str) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        setattr(p.cfg, attr, p.read(d)[0])

    _option(name, min_args=1, max_args=1)(handler)


for _name, _attr in (
    ("ca", "ca"),
    ("cert", "cert"),
    ("key", "key"),
    ("extra-certs", "extra_certs"),
):
    _pem_option(_name, _attr)


@_option("dh", min_args=1, max_args=1)
def _dh(p: _Parser, d: Directive) -> None:
    p.cfg.dh = None if (not d.inline and d.args[0] == "none") else p.read(d)[0]


@_option("crl-verify", min_args=1, max_args=2)
def _crl_verify(p: _Parser, d: Directive) -> None:
    if len(d.args) > 1 and not d.inline:
        raise ConfigError("the 'dir' form is not supported; give a CRL file", d.name, d.where)
    p.cfg.crl, p.cfg.crl_path = p.read(d)


@_option("remote-cert-ku", min_args=0, max_args=16)
def _remote_cert_ku(p: _Parser, d: Directive) -> None:
    try:
        p.cfg.remote_cert_ku = tuple(int(v, 16) for v in d.args)
    except ValueError:
        raise ConfigError("key usage values are hex numbers", d.name, d.where) from None


@_option("verify-x509-name", min_args=1, max_args=2)
def _verify_x509_name(p: _Parser, d: Directive) -> None:
    kind = d.args[1] if len(d.args) > 1 else "subject"
    if kind not in ("subject", "name", "name-prefix"):
        raise ConfigError(f"unknown X.509 name type {kind!r}", d.name, d.where)
    p.cfg.verify_x509_name = (d.args[0], kind)


@_option("peer-fingerprint", min_args=1, max_args=1)
def _peer_fingerprint(p: _Parser, d: Directive) -> None:
    for line in d.args[0].splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        try:
            digest = bytes.fromhex(line.replace(":", ""))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConfigError(f"{line!r} is not a SHA-256 fingerprint (AB:CD:...)", d.name, d.where)
        p.cfg.peer_fingerprints.append(digest)


@_option("auth-user-pass", min_args=0, max_args=1)
def _auth_user_pass(p: _Parser, d: Directive) -> None:
    if not d.args:
        raise ConfigError(
            "needs a file or an inline block (xdp-ovpn does not prompt)", d.name, d.where
        )
    lines = p.read(d)[0].decode("utf-8", "replace").splitlines()
    if len(lines) < 2 or not lines[0]:
        raise ConfigError("needs a username line and a password line", d.name, d.where)
    p.cfg.auth_user_pass = (lines[0], lines[1])


# ---------------------------------------------------------------- server features


@_option("auth-user-pass-verify", min_args=2, max_args=2)
def _auth_user_pass_verify(p: _Parser, d: Directive) -> None:
    if d.args[1] not in ("via-env", "via-file"):
        raise ConfigError(f"method must be via-env or via-file, not {d.args[1]!r}", d.name, d.where)
    p.cfg.auth_user_pass_verify = (d.args[0], d.args[1])


@_option("status", min_args=1, max_args=2)
def _status(p: _Parser, d: Directive) -> None:
    p.cfg.status = p.path(d.args[0])
    if len(d.args) > 1:
        p.cfg.status_seconds = _int(d, d.args[1])


@_option("management", min_args=2, max_args=3)
def _management(p: _Parser, d: Directive) -> None:
    pw = p.path(d.args[2]) if len(d.args) > 2 and d.args[2] != "stdin" else None
    p.cfg.management = Management(d.args[0], d.args[1], pw)


# ---------------------------------------------------------------- xdp-ovpn's own

XDP_MODES = ("auto", "native", "generic")


@_option("xdp-interface", min_args=1, max_args=1)
def _xdp_interface(p: _Parser, d: Directive) -> None:
    p.cfg.xdp_interfaces.append(d.args[0])


@_option("xdp-mode", min_args=1, max_args=1)
def _xdp_mode(p: _Parser, d: Directive) -> None:
    if d.args[0] not in XDP_MODES:
        raise ConfigError(f"must be one of {', '.join(XDP_MODES)}, not {d.args[0]!r}",
                          d.name, d.where)
    p.cfg.xdp_mode = d.args[0]


SUPPORTED_OPTIONS = frozenset(_HANDLERS)  # every option with an effect (see IGNORED_OPTIONS)


# ---------------------------------------------------------------- expansion and checks


def _finish(p: _Parser) -> None:
    cfg = p.cfg
    loc = cfg.locations
    src = Location(cfg.source)

    def where(*names: str) -> Location:
        return next((loc[n] for n in names if n in loc), src)

    for r_index, r in enumerate(cfg.remotes):
        cfg.remotes[r_index] = Remote(
            r.host, cfg.rport if r.port == _UNSET_PORT else r.port, r.proto or cfg.proto
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
        if cfg.topology in ("net30", "p2p") and "topology" in loc:
            raise ConfigError(
                "a server needs 'topology subnet' for the DCO-style data path",
                f"topology {cfg.topology}",
                loc["topology"],
            )
        cfg.topology = "subnet"
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

    _expand_keepalive(cfg, where)
    _check_cipher(cfg, where)
    _check_credentials(cfg, where)


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
            f"{cfg.cipher} is not an AEAD cipher (p2p uses it as the fallback); {_AEAD_HINT}",
            "cipher",
            where("cipher"),
        )
    cfg.warnings.append(
        f"cipher {cfg.cipher} is ignored: negotiation uses data-ciphers "
        f"({':'.join(cfg.data_ciphers)})"
    )
    cfg.cipher = None


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


# ---------------------------------------------------------------- entry points


def parse_text(
    text: str, source: str = "<config>", directory: str | os.PathLike | None = None
) -> Config:
    """Parse config text; relative paths resolve against `directory` (default: cwd)."""
    return parse_directives(read_directives(text, source), source, directory)


def parse_directives(
    directives: Iterable[Directive],
    source: str = "<config>",
    directory: str | os.PathLike | None = None,
) -> Config:
    cfg = Config(source=source, directory=Path(directory) if directory else Path.cwd())
    parser = _Parser(cfg)
    parser.run(directives)
    _finish(parser)
    return cfg


def load(path: str | os.PathLike, extra_args: Sequence[str] = ()) -> Config:
    """Parse a config file (relative paths against its directory), then `--option` args."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file: {exc.strerror}", where=Location(str(p))
        ) from None
    directives = read_directives(text, str(p)) + directives_from_args(extra_args)
    return parse_directives(directives, str(p), p.resolve().parent)


def parse_args(argv: Sequence[str]) -> Config:
    """openvpn-style command line: `--config FILE --verb 4 ...` (later options win)."""
    return parse_directives(directives_from_args(argv), "command line")
