"""OpenVPN configuration files: the supported subset, a one-line error for the rest.

Syntax, defaults and the `server`/`keepalive` expansions follow openvpn 2.6
(options.c: parse_line, init_options, add_option; helper.c). What the DCO-style
data path cannot do (tap, TCP, compression, fragment, non-AEAD ciphers, a
server without `topology subnet`) is refused with `file:line: option: reason`.
"""

from __future__ import annotations

import dataclasses
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


class ConfigErrors(ConfigError):
    """Several errors of one config, reported together; str() is one line each."""

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        self.errors = list(errors)
        Exception.__init__(self, "\n".join(str(e) for e in self.errors))
        self.reason, self.option, self.where = str(self), "", None


def raise_errors(errors: Sequence[ConfigError]) -> None:
    """Raise nothing, the one error, or all of them together."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


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
    # mssfix: None = openvpn's default (1492 mtu, or tun-mtu fixed when tun-mtu is not
    # 1500); 0 = no clamping. The mode: "" (a UDP payload size), "mtu" or "fixed".
    mssfix: int | None = None
    mssfix_mode: str = ""
    txqueuelen: int | None = None  # the TUN's; None keeps the kernel's default
    # transport
    proto: str = "udp"
    local: str | None = None
    lport: int = OPENVPN_PORT
    rport: int = OPENVPN_PORT
    remotes: list[Remote] = field(default_factory=list)
    remote_random: bool = False
    connect_retry: int = 1
    connect_retry_wait_max: int = 300  # connect-retry's second argument (backoff cap)
    connect_retry_max: int = 0  # attempts per remote before giving up; 0 = for ever
    bind: bool = True
    float: bool = False
    sndbuf: int = 0  # the UDP socket's SO_SNDBUF; 0 keeps the kernel's default
    rcvbuf: int = 0  # the UDP socket's SO_RCVBUF; 0 keeps the kernel's default
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
    route_nopull: bool = False
    pull_filters: list[tuple[str, str]] = field(default_factory=list)  # (action, prefix)
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
    reneg_sec: int = 3600
    reneg_bytes: int = 0  # data-channel bytes on a key before renegotiating; 0 = never
    reneg_pkts: int = 0  # data-channel packets on a key before renegotiating; 0 = never
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
    # control channel and certificates
    tls_wrap: TLSWrap | None = None
    key_direction: int | None = None
    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    extra_certs: bytes | None = None
    crl: bytes | None = None
    crl_path: Path | None = None  # re-read on each handshake, as openvpn does
    tls_version_min: str | None = None
    tls_version_max: str | None = None
    tls_cipher: str | None = None
    tls_ciphersuites: str | None = None
    tls_groups: str | None = None
    ecdh_curve: str | None = None
    remote_cert_tls: str | None = None
    remote_cert_ku: tuple[int, ...] | None = None
    remote_cert_eku: str | None = None
    verify_x509_name: tuple[str, str] | None = None  # (name, subject|name|name-prefix)
    peer_fingerprints: list[bytes] = field(default_factory=list)
    auth_user_pass: tuple[str, str] | None = None
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
    setenv: dict[str, str] = field(default_factory=dict)  # extra script environment
    # Own dhcp-option / dns lines: on Linux openvpn only hands them to the up script.
    script_dns_options: list[str] = field(default_factory=list)
    # process
    writepid: Path | None = None
    log: Path | None = None
    log_append: bool = False
    verb: int = 1
    nice: int = 0
    user: str | None = None
    group: str | None = None
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
    ignored: dict[str, Location] = field(default_factory=dict)  # option -> first use
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


def read_directives(
    text: str, file: str, errors: list[ConfigError] | None = None
) -> list[Directive]:
    """Turn config text into directives, collecting <tag>...</tag> inline blocks.

    With `errors`, a line that cannot be split is kept there and reading goes on."""
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
                unclosed = ConfigError(f"inline block <{tag}> has no {end}", tag, where)
                if errors is None:
                    raise unclosed
                errors.append(unclosed)
                break
            n += 1
            out.append(Directive(tag, ("\n".join(body) + "\n",), where, inline=True))
            continue
        try:
            words = split_line(raw, where)
        except ConfigError as exc:
            if errors is None:
                raise
            errors.append(exc)
            continue
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
#
# Every option the parser knows has exactly one outcome (see option_table()):
# supported (a handler stores it in the Config fields through which it acts),
# refused (one line naming the option, its line and the reason), or ignored
# (harmless here; each use is logged once at start).

Handler = Callable[["_Parser", Directive], None]
_HANDLERS: dict[str, tuple[int, int, Handler]] = {}
_FIELDS: dict[str, tuple[str, ...]] = {}  # option -> the Config fields it acts through
# Options whose whole effect happens inside the parser (includes, paths, accepted values
# that match what xdp-ovpn does anyway).
PARSER_ONLY = frozenset(
    {"config", "cd", "ignore-unknown-option", "allow-compression", "dev-type", "auth-retry"}
)


def _option(
    *names: str, min_args: int = 0, max_args: int = 0, fields: tuple[str, ...] = ()
) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for name in names:
            _HANDLERS[name] = (min_args, max_args, fn)
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

_AEAD_HINT = "the DCO-style data path does AES-128/192/256-GCM and CHACHA20-POLY1305 only"
_NOT_YET = "not supported yet"
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
    "tls-exit": _NOT_YET,
    "remap-usr1": _NOT_YET,
    "management-client": f"{_NOT_YET}; management listens for connections",
    "management-hold": _NOT_YET,
    "management-query-passwords": f"{_NOT_YET}; give auth-user-pass a file",
    "askpass": f"{_NOT_YET}; give an unencrypted key (xdp-ovpn does not prompt)",
    "chroot": _NOT_YET,
    "mlock": _NOT_YET,
    "up-delay": _NOT_YET,
    "up-restart": _NOT_YET,
    "route-pre-down": _NOT_YET,
    "ipchange": _NOT_YET,
    "iproute": f"{_NOT_YET}; xdp-ovpn configures the TUN and routes over netlink",
    "ifconfig-noexec": _NOT_YET,
    "route-noexec": _NOT_YET,
    "redirect-private": _NOT_YET,
    "auth-gen-token": _NOT_YET,
    "auth-user-pass-optional": _NOT_YET,
    "client-cert-not-required": "use 'verify-client-cert none'",
    "ccd-exclusive-dir": _NOT_YET,
    "tmp-dir": _NOT_YET,
    "ifconfig-pool-linear": "removed in openvpn 2.5; use topology subnet",
    "stale-routes-check": _NOT_YET,
    "inactive": _NOT_YET,
    "session-timeout": _NOT_YET,
    "bcast-buffers": _NOT_YET,
    "tcp-queue-limit": "needs TCP, which is not supported yet",
    "port-share": "needs TCP, which is not supported yet",
    "mark": _NOT_YET,
    "bind-dev": _NOT_YET,
    "lladdr": "layer 2 (tap) is not supported: the DCO-style data path is tun only",
    "key-method": "removed in openvpn 2.5 (key method 2 is used)",
    "tls-cert-profile": _NOT_YET,
    "x509-username-field": _NOT_YET,
    "x509-track": _NOT_YET,
    "capath": f"{_NOT_YET}; give the CA certificates in one 'ca' file",
    "pkcs11-providers": _NOT_YET,
    "cryptoapicert": "Windows only",
    "engine": _NOT_YET,
    "providers": _NOT_YET,
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
    "management": "server only, for now",
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
    if name in _SERVER_MODE_ONLY:
        return "server only (needs mode server, as in openvpn)"
    return _LIMITS.get(name, "")


def option_table() -> list[OptionEntry]:
    """Every option the parser knows, sorted by name, with its one outcome."""
    rows = [OptionEntry(n, Outcome.SUPPORTED, _limit(n), _FIELDS[n]) for n in _HANDLERS]
    rows += [OptionEntry(n, Outcome.REFUSED, r) for n, r in _REFUSED.items()]
    rows += [OptionEntry(n, Outcome.IGNORED, r) for n, r in IGNORED_OPTIONS.items()]
    return sorted(rows, key=lambda row: row.name)


class _Parser:
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
        entry = _HANDLERS.get(name)
        if entry is None:
            if name in self.ignore_unknown:
                self.cfg.ignored.setdefault(name, d.where)
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


# The role options act through the role _finish derives from them.
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
        _option(name, fields=_ROLE_FIELDS.get(name, (attr,)))(_flag(attr))
    _option("nobind", fields=("bind",))(_flag("bind", False))
    _option("bind", fields=("bind",))(_flag("bind", True))
    _option("log-append", min_args=1, max_args=1, fields=("log", "log_append"))(_set_log)
    _option("log", min_args=1, max_args=1, fields=("log", "log_append"))(_set_log)


def _set_log(p: _Parser, d: Directive) -> None:
    p.cfg.log = p.path(d.args[0])
    p.cfg.log_append = d.name == "log-append"


def _int_option(name: str, attr: str, lo: int = 0, hi: int = 2**31 - 1) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        setattr(p.cfg, attr, _int(d, d.args[0], lo, hi))

    _option(name, min_args=1, max_args=1, fields=(attr,))(handler)


def _str_option(name: str, attr: str) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        setattr(p.cfg, attr, d.args[0])

    _option(name, min_args=1, max_args=1, fields=(attr,))(handler)


def _path_option(name: str, attr: str) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        setattr(p.cfg, attr, p.path(d.args[0]))

    _option(name, min_args=1, max_args=1, fields=(attr,))(handler)


def _choice_option(name: str, attr: str, choices: tuple[str, ...], max_args: int = 1) -> None:
    def handler(p: _Parser, d: Directive) -> None:
        if d.args[0] not in choices:
            raise ConfigError(f"must be {' or '.join(choices)}, not {d.args[0]!r}", d.name, d.where)
        setattr(p.cfg, attr, d.args[0])

    _option(name, min_args=1, max_args=max_args, fields=_ROLE_FIELDS.get(name, (attr,)))(handler)


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
        p.run(read_directives(text.decode("utf-8", "replace"), str(path), p.errors))
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


@_option("dev", min_args=1, max_args=1, fields=("dev",))
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


# Below this an MSS would be useless (576: the datagram every IPv4 host must accept).
_MSSFIX_MIN = 576


@_option("mssfix", max_args=2, fields=("mssfix", "mssfix_mode"))
def _mssfix(p: _Parser, d: Directive) -> None:
    if not d.args:  # openvpn: the default, as if absent
        p.cfg.mssfix, p.cfg.mssfix_mode = None, ""
        return
    value = _int(d, d.args[0], 0, 65535)
    if 0 < value < _MSSFIX_MIN:
        raise ConfigError(f"must be 0 (no clamping) or at least {_MSSFIX_MIN}, not {value}",
                          d.name, d.where)
    mode = d.args[1] if len(d.args) > 1 else ""
    if mode not in ("", "mtu", "fixed"):
        raise ConfigError(f"the second argument must be mtu or fixed, not {mode!r}",
                          d.name, d.where)
    p.cfg.mssfix, p.cfg.mssfix_mode = value, mode


@_option("tun-mtu", min_args=1, max_args=2, fields=("tun_mtu",))
def _tun_mtu(p: _Parser, d: Directive) -> None:
    p.cfg.tun_mtu = _int(d, d.args[0], 576, 65535)


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


@_option("proto", min_args=1, max_args=1, fields=("proto",))
def _proto(p: _Parser, d: Directive) -> None:
    p.cfg.proto = _check_proto(d, d.args[0], "proto")


@_option("port", "lport", "rport", min_args=1, max_args=1, fields=("lport", "rport"))
def _ports(p: _Parser, d: Directive) -> None:
    port = _port(d, d.args[0])
    if d.name in ("port", "lport"):
        p.cfg.lport = port
    if d.name in ("port", "rport"):
        p.cfg.rport = port


@_option("local", min_args=1, max_args=1, fields=("local",))
def _local(p: _Parser, d: Directive) -> None:
    p.cfg.local = d.args[0]


# A remote's port and proto default to rport/proto at the end of parsing, like openvpn.
_UNSET_PORT = -1


@_option("remote", min_args=1, max_args=3, fields=("remotes",))
def _remote(p: _Parser, d: Directive) -> None:
    port = _port(d, d.args[1]) if len(d.args) > 1 else _UNSET_PORT
    proto = _check_proto(d, d.args[2], "remote") if len(d.args) > 2 else ""
    p.cfg.remotes.append(Remote(d.args[0], port, proto))


@_option(
    "connect-retry", min_args=1, max_args=2, fields=("connect_retry", "connect_retry_wait_max")
)
def _connect_retry(p: _Parser, d: Directive) -> None:
    p.cfg.connect_retry = _int(d, d.args[0])
    if len(d.args) > 1:
        p.cfg.connect_retry_wait_max = _int(d, d.args[1])


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


@_option("ifconfig", min_args=2, max_args=2, fields=("ifconfig",))
def _ifconfig(p: _Parser, d: Directive) -> None:
    local, other = (str(_ipv4(d, a)) for a in d.args)
    p.cfg.ifconfig = (local, other)


@_option("ifconfig-ipv6", min_args=2, max_args=2, fields=("ifconfig_ipv6",))
def _ifconfig_ipv6(p: _Parser, d: Directive) -> None:
    local = _ipv6_iface(d, d.args[0] if "/" in d.args[0] else d.args[0] + "/64")
    if not 64 <= local.network.prefixlen <= 124:
        raise ConfigError("/netbits must be between 64 and 124", d.name, d.where)
    remote = _ipv6_iface(d, d.args[1]).ip
    p.cfg.ifconfig_ipv6 = (local, remote)


@_option("server", min_args=2, max_args=3, fields=("role", "ifconfig", "ifconfig_pool", "push"))
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


@_option(
    "server-ipv6",
    min_args=1,
    max_args=1,
    fields=("role", "ifconfig_ipv6", "ifconfig_ipv6_pool", "push"),
)
def _server_ipv6(p: _Parser, d: Directive) -> None:
    iface = _ipv6_iface(d, d.args[0])
    if not 64 <= iface.network.prefixlen <= 124:
        raise ConfigError("the network must be between /64 and /124", d.name, d.where)
    p.cfg.server_ipv6 = iface.network


@_option("ifconfig-pool", min_args=2, max_args=3, fields=("ifconfig_pool", "ifconfig_pool_netmask"))
def _ifconfig_pool(p: _Parser, d: Directive) -> None:
    start, end = _ipv4(d, d.args[0]), _ipv4(d, d.args[1])
    if end < start:
        raise ConfigError("the pool ends before it starts", d.name, d.where)
    p.cfg.ifconfig_pool = (start, end)
    if len(d.args) > 2:
        p.cfg.ifconfig_pool_netmask = _ipv4(d, d.args[2])


@_option(
    "ifconfig-ipv6-pool",
    min_args=1,
    max_args=1,
    fields=("ifconfig_ipv6_pool", "ifconfig_ipv6_pool_base"),
)
def _ifconfig_ipv6_pool(p: _Parser, d: Directive) -> None:
    iface = _ipv6_iface(d, d.args[0])
    if not 64 <= iface.network.prefixlen <= 124:
        raise ConfigError("the network must be between /64 and /124", d.name, d.where)
    p.cfg.ifconfig_ipv6_pool = iface.network
    p.cfg.ifconfig_ipv6_pool_base = iface.ip


@_option(
    "ifconfig-pool-persist",
    min_args=1,
    max_args=2,
    fields=("ifconfig_pool_persist", "ifconfig_pool_persist_seconds"),
)
def _pool_persist(p: _Parser, d: Directive) -> None:
    p.cfg.ifconfig_pool_persist = p.path(d.args[0])
    if len(d.args) > 1:
        p.cfg.ifconfig_pool_persist_seconds = _int(d, d.args[1])


@_option("route", min_args=1, max_args=4, fields=("routes",))
def _route(p: _Parser, d: Directive) -> None:
    mask = d.args[1] if len(d.args) > 1 and d.args[1] != "default" else "255.255.255.255"
    gateway = d.args[2] if len(d.args) > 2 and d.args[2] != "default" else None
    metric = _int(d, d.args[3]) if len(d.args) > 3 else None
    net = _ipv4_net(d, d.args[0], mask)
    p.cfg.routes.append(Route(net, gateway, metric))


@_option("route-ipv6", min_args=1, max_args=3, fields=("routes_ipv6",))
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


@_option("redirect-gateway", min_args=0, max_args=8, fields=("redirect_gateway",))
def _redirect_gateway(p: _Parser, d: Directive) -> None:
    for flag in d.args:
        if flag not in _REDIRECT_FLAGS:
            raise ConfigError(f"unknown flag {flag!r}", d.name, d.where)
    p.cfg.redirect_gateway = d.args


_PULL_FILTER_ACTIONS = ("accept", "ignore", "reject")


@_option("pull-filter", min_args=2, max_args=2, fields=("pull_filters",))
def _pull_filter(p: _Parser, d: Directive) -> None:
    if d.args[0] not in _PULL_FILTER_ACTIONS:
        raise ConfigError(
            f"action must be accept, ignore or reject, not {d.args[0]!r}", d.name, d.where
        )
    p.cfg.pull_filters.append((d.args[0], d.args[1]))


@_option("push", min_args=1, max_args=1, fields=("push",))
def _push(p: _Parser, d: Directive) -> None:
    p.cfg.push.append(d.args[0])


# ---------------------------------------------------------------- timers


@_option("keepalive", min_args=2, max_args=2, fields=("ping", "ping_restart"))
def _keepalive(p: _Parser, d: Directive) -> None:
    interval, timeout = _int(d, d.args[0], 1), _int(d, d.args[1], 1)
    if interval * 2 > timeout:
        raise ConfigError(
            f"the timeout ({timeout}) must be at least twice the interval ({interval})",
            d.name,
            d.where,
        )
    p.cfg.keepalive = (interval, timeout)


@_option("reneg-sec", min_args=1, max_args=2, fields=("reneg_sec",))
def _reneg_sec(p: _Parser, d: Directive) -> None:
    p.cfg.reneg_sec = _int(d, d.args[0])
    if len(d.args) > 1:
        raise ConfigError(
            f"the second argument (a random lower bound) is {_NOT_YET}; give one value",
            d.name,
            d.where,
        )


@_option("replay-window", min_args=1, max_args=2, fields=("replay_window", "replay_time"))
def _replay_window(p: _Parser, d: Directive) -> None:
    # Bounds from openvpn's packet_id.h (MIN/MAX_SEQ_BACKTRACK, MIN/MAX_TIME_BACKTRACK).
    p.cfg.replay_window = _int(d, d.args[0], 0, 65536)
    if len(d.args) > 1:
        p.cfg.replay_time = _int(d, d.args[1], 0, 600)


@_option("xdp-control-limit", min_args=1, max_args=4, fields=("xdp_control_limit",))
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


@_option("data-ciphers", "ncp-ciphers", min_args=1, max_args=1, fields=("data_ciphers",))
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


@_option("data-ciphers-fallback", min_args=1, max_args=1, fields=("data_ciphers_fallback",))
def _data_ciphers_fallback(p: _Parser, d: Directive) -> None:
    p.cfg.data_ciphers_fallback = _aead(d, d.args[0])


@_option("cipher", min_args=1, max_args=1, fields=("cipher",))
def _cipher(p: _Parser, d: Directive) -> None:
    # Checked in _finish: openvpn 2.6 ignores --cipher for negotiation with pull or a server.
    p.cfg.cipher = _cipher_name(d.args[0])


@_option("auth", min_args=1, max_args=1, fields=("auth",))
def _auth(p: _Parser, d: Directive) -> None:
    p.cfg.auth = d.args[0].upper()


@_option("allow-compression", min_args=1, max_args=1)
def _allow_compression(p: _Parser, d: Directive) -> None:
    if d.args[0] != "no":
        raise ConfigError(
            "compression is not supported by the DCO-style data path; use 'allow-compression no'",
            f"allow-compression {d.args[0]}",
            d.where,
        )


@_option("auth-retry", min_args=1, max_args=1)
def _auth_retry(p: _Parser, d: Directive) -> None:
    if d.args[0] != "none":
        raise ConfigError(
            f"{_NOT_YET}: an AUTH_FAILED ends the client, as with 'auth-retry none'",
            f"auth-retry {d.args[0]}",
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


@_option("tls-auth", min_args=1, max_args=2, fields=("tls_wrap",))
def _tls_auth(p: _Parser, d: Directive) -> None:
    key, path = p.read(d)
    explicit = len(d.args) > 1 and not d.inline
    # Without a direction argument, key-direction applies wherever it appears (see _finish).
    p.tls_auth_direction_given = explicit
    direction = _direction(d, d.args[1]) if explicit else None
    _set_wrap(p, d, TLSWrap(Wrapping.TLS_AUTH, key, direction, path))


@_option("key-direction", min_args=1, max_args=1, fields=("tls_wrap",))
def _key_direction(p: _Parser, d: Directive) -> None:
    p.cfg.key_direction = _direction(d, d.args[0])


@_option("tls-crypt", min_args=1, max_args=1, fields=("tls_wrap",))
def _tls_crypt(p: _Parser, d: Directive) -> None:
    key, path = p.read(d)
    _set_wrap(p, d, TLSWrap(Wrapping.TLS_CRYPT, key, None, path))


@_option("tls-crypt-v2", min_args=1, max_args=2, fields=("tls_wrap",))
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

    _option(name, min_args=1, max_args=1, fields=(attr,))(handler)


for _name, _attr in (
    ("ca", "ca"),
    ("cert", "cert"),
    ("key", "key"),
    ("extra-certs", "extra_certs"),
):
    _pem_option(_name, _attr)


@_option("crl-verify", min_args=1, max_args=2, fields=("crl_path", "crl"))
def _crl_verify(p: _Parser, d: Directive) -> None:
    if len(d.args) > 1 and not d.inline:
        raise ConfigError("the 'dir' form is not supported; give a CRL file", d.name, d.where)
    p.cfg.crl, p.cfg.crl_path = p.read(d)


@_option("remote-cert-ku", min_args=0, max_args=16, fields=("remote_cert_ku",))
def _remote_cert_ku(p: _Parser, d: Directive) -> None:
    try:
        p.cfg.remote_cert_ku = tuple(int(v, 16) for v in d.args)
    except ValueError:
        raise ConfigError("key usage values are hex numbers", d.name, d.where) from None


@_option("verify-x509-name", min_args=1, max_args=2, fields=("verify_x509_name",))
def _verify_x509_name(p: _Parser, d: Directive) -> None:
    kind = d.args[1] if len(d.args) > 1 else "subject"
    if kind not in ("subject", "name", "name-prefix"):
        raise ConfigError(f"unknown X.509 name type {kind!r}", d.name, d.where)
    p.cfg.verify_x509_name = (d.args[0], kind)


@_option("peer-fingerprint", min_args=1, max_args=1, fields=("peer_fingerprints",))
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


@_option("auth-user-pass", min_args=0, max_args=1, fields=("auth_user_pass",))
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


@_option("auth-user-pass-verify", min_args=2, max_args=2, fields=("auth_user_pass_verify",))
def _auth_user_pass_verify(p: _Parser, d: Directive) -> None:
    if d.args[1] not in ("via-env", "via-file"):
        raise ConfigError(f"method must be via-env or via-file, not {d.args[1]!r}", d.name, d.where)
    p.cfg.auth_user_pass_verify = (d.args[0], d.args[1])


@_option("dhcp-option", "dns", min_args=1, max_args=16, fields=("script_dns_options",))
def _dns_for_scripts(p: _Parser, d: Directive) -> None:
    p.cfg.script_dns_options.append(" ".join((d.name, *d.args)))


@_option("setenv", "setenv-safe", min_args=1, max_args=64, fields=("setenv",))
def _setenv(p: _Parser, d: Directive) -> None:
    if d.name == "setenv" and d.args[0] == "opt":
        # `setenv opt OPTION ...`: OPTION applies where known, is ignored where not.
        if len(d.args) > 1:
            p.ignore_unknown.add(d.args[1])
            p.apply(Directive(d.args[1], d.args[2:], d.where))
        return
    if len(d.args) > 2:
        raise ConfigError(_arity(1, 2, len(d.args)), d.name, d.where)
    name = d.args[0] if d.name == "setenv" else f"OPENVPN_{d.args[0]}"
    p.cfg.setenv[name] = d.args[1] if len(d.args) > 1 else ""


@_option("status", min_args=1, max_args=2, fields=("status", "status_seconds"))
def _status(p: _Parser, d: Directive) -> None:
    p.cfg.status = p.path(d.args[0])
    if len(d.args) > 1:
        p.cfg.status_seconds = _int(d, d.args[1])


@_option("management", min_args=2, max_args=3, fields=("management",))
def _management(p: _Parser, d: Directive) -> None:
    pw = p.path(d.args[2]) if len(d.args) > 2 and d.args[2] != "stdin" else None
    p.cfg.management = Management(d.args[0], d.args[1], pw)


# ---------------------------------------------------------------- xdp-ovpn's own

XDP_MODES = ("auto", "native", "generic")


@_option("xdp-interface", min_args=1, max_args=1, fields=("xdp_interfaces",))
def _xdp_interface(p: _Parser, d: Directive) -> None:
    p.cfg.xdp_interfaces.append(d.args[0])


@_option("xdp-mode", min_args=1, max_args=1, fields=("xdp_mode",))
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
            f"{cfg.cipher} is not an AEAD cipher (p2p uses it as the fallback); {_AEAD_HINT}",
            "cipher",
            where("cipher"),
        )
    cfg.warnings.append(
        f"cipher {cfg.cipher} is ignored: negotiation uses data-ciphers "
        f"({':'.join(cfg.data_ciphers)})"
    )
    cfg.cipher = None


# Options that act in some roles only, and where they would silently do nothing.
# openvpn refuses these without mode server (options_postprocess_verify_ce):
_SERVER_MODE_ONLY = (
    "ifconfig-pool", "ifconfig-pool-persist", "ifconfig-ipv6-pool", "max-clients",
    "client-connect", "client-disconnect", "client-config-dir", "ccd-exclusive",
    "client-to-client", "duplicate-cn", "username-as-common-name", "auth-user-pass-verify",
    "learn-address", "push",
)  # fmt: skip
# openvpn has these on a client too; here the server has them only, so far:
_SERVER_ONLY_SO_FAR = ("management", "user", "group", "tls-verify")
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
        for name in _SERVER_MODE_ONLY:
            if name in loc:
                raise ConfigError("needs mode server (as in openvpn)", name, loc[name])
        if cfg.verify_client_cert != "require":
            raise ConfigError(
                "needs mode server (as in openvpn)", "verify-client-cert", loc["verify-client-cert"]
            )
        for name in _SERVER_ONLY_SO_FAR:
            if name in loc:
                raise ConfigError(f"{_NOT_YET} on a {cfg.role.value}; remove it", name, loc[name])
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


# ---------------------------------------------------------------- entry points


def parse_text(
    text: str, source: str = "<config>", directory: str | os.PathLike | None = None
) -> Config:
    """Parse config text; relative paths resolve against `directory` (default: cwd)."""
    errors: list[ConfigError] = []
    directives = read_directives(text, source, errors)
    return parse_directives(directives, source, directory, errors)


def parse_directives(
    directives: Iterable[Directive],
    source: str = "<config>",
    directory: str | os.PathLike | None = None,
    errors: Sequence[ConfigError] = (),
) -> Config:
    """Apply directives and check the whole; every error found is raised together
    (ConfigErrors). The whole-config checks run only when every line was read."""
    cfg = Config(source=source, directory=Path(directory) if directory else Path.cwd())
    parser = _Parser(cfg)
    parser.errors += errors
    parser.run(directives)
    if not parser.errors:
        try:
            _finish(parser)
        except ConfigError as exc:
            parser.errors.append(exc)
    raise_errors(parser.errors)
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
    errors: list[ConfigError] = []
    directives = read_directives(text, str(p), errors) + directives_from_args(extra_args)
    return parse_directives(directives, str(p), p.resolve().parent, errors)


def parse_args(argv: Sequence[str]) -> Config:
    """openvpn-style command line: `--config FILE --verb 4 ...` (later options win)."""
    return parse_directives(directives_from_args(argv), "command line")
