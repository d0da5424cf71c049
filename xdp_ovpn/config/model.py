"""The parsed configuration: `Config` and its parts, the errors a config gives, and the
command-line listener form (`parse_listen`)."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdp_ovpn.loader.maps import DEFAULT_CONTROL_LIMITS, ControlLimits
from xdp_ovpn.proto.constants import (
    DEFAULT_DATA_CIPHERS,
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    DEFAULT_TLS_MTU,
)

OPENVPN_PORT = 1194


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


def parse_listen(text: str, *, any_address: bool = False) -> tuple[str, int]:
    """`ADDR:PORT` or `[V6ADDR]:PORT` as (host, port) for a command-line listener; with
    `any_address` also `:PORT` or `PORT` (host "": every address). ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep and any_address:
        port = text
    host = host.strip("[]")
    if not port.isdigit() or not 0 < int(port) < 65536 or not (host or any_address):
        raise ValueError(f"expected ADDR:PORT, got {text!r}")
    return host, int(port)


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
