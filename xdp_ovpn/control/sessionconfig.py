"""From a parsed openvpn Config to the SessionConfig every proto.Session of this run uses."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from cryptography import x509

from xdp_ovpn.config import Config, ConfigError, Role, Wrapping
from xdp_ovpn.control.log import get_logger
from xdp_ovpn.proto.errors import ProtocolError
from xdp_ovpn.proto.session import SessionConfig, SessionRole, Wrapper
from xdp_ovpn.proto.statickey import (
    parse_static_key,
    parse_tls_crypt_v2_client_key,
    parse_tls_crypt_v2_server_key,
)
from xdp_ovpn.proto.tls import TLSConfig, TLSPolicyError, check_policy
from xdp_ovpn.proto.tls_auth import TLSAuth
from xdp_ovpn.proto.tls_crypt import TLSCrypt
from xdp_ovpn.proto.tls_crypt_v2 import TLSCryptV2Client, TLSCryptV2Server
from xdp_ovpn.proto.wrapping import NoWrap


def session_role(cfg: Config) -> SessionRole:
    if cfg.role is Role.SERVER:
        return SessionRole.SERVER
    if cfg.role is Role.CLIENT:
        return SessionRole.CLIENT
    return SessionRole.P2P_SERVER if cfg.tls_server else SessionRole.P2P_CLIENT


class CrlFile:
    """crl-verify's file, re-read when it changes, as openvpn re-reads it per handshake;
    a file that cannot be read or parsed keeps the last good CRL (with a log line)."""

    def __init__(self, path: Path, pem: bytes) -> None:
        self.path = path
        self.pem = pem
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def __call__(self) -> bytes:
        stamp = self._stat()
        if stamp is not None and stamp != self._stamp:
            try:
                pem = self.path.read_bytes()
                x509.load_pem_x509_crl(pem)
            except (OSError, ValueError) as exc:
                get_logger().warning("CRL: cannot use %s (%s); keeping the previous one",
                                     self.path, exc)
            else:
                self.pem = pem
                get_logger().info("CRL: reloaded %s", self.path)
            self._stamp = stamp
        return self.pem


def tls_config(cfg: Config) -> TLSConfig:
    cert = (cfg.cert or b"") + (cfg.extra_certs or b"")
    crl_source = CrlFile(cfg.crl_path, cfg.crl) if cfg.crl_path and cfg.crl else None
    tls = TLSConfig(
        ca_pem=cfg.ca,
        cert_pem=cert,
        key_pem=cfg.key or b"",
        crl_pem=cfg.crl,
        remote_cert_tls=cfg.remote_cert_tls,  # type: ignore[arg-type]
        verify_x509_name=cfg.verify_x509_name,  # type: ignore[arg-type]
        peer_fingerprints=list(cfg.peer_fingerprints) or None,
        tls_version_min=cfg.tls_version_min,
        tls_version_max=cfg.tls_version_max,
        remote_cert_ku=cfg.remote_cert_ku,
        remote_cert_eku=cfg.remote_cert_eku,
        require_peer_cert=cfg.verify_client_cert == "require",
        request_peer_cert=cfg.verify_client_cert != "none",
        tls_cipher=cfg.tls_cipher,
        tls_ciphersuites=cfg.tls_ciphersuites,
        tls_groups=cfg.tls_groups or cfg.ecdh_curve,
        crl_source=crl_source,
    )
    try:
        check_policy(tls)
    except TLSPolicyError as exc:
        option = exc.option
        if option == "tls-groups" and not cfg.tls_groups:
            option = "ecdh-curve"  # openvpn 2.6 uses ecdh-curve as the group when alone
        raise ConfigError(exc.reason, option, cfg.locations.get(option)) from None
    return tls


def wrapper_factory(cfg: Config) -> Callable[[], Wrapper]:
    """A fresh control-channel wrapper per session (each has its own replay state)."""
    wrap = cfg.tls_wrap
    is_server = cfg.tls_server
    window, seconds = cfg.replay_window, cfg.replay_time
    where = cfg.locations.get(wrap.mode.value) if wrap else None
    try:
        if wrap is None:
            return NoWrap
        text = wrap.key.decode("ascii", "replace")
        if wrap.mode is Wrapping.TLS_AUTH:
            key = parse_static_key(text)
            return lambda: TLSAuth(key, wrap.direction, cfg.auth, window, seconds)
        if wrap.mode is Wrapping.TLS_CRYPT:
            key = parse_static_key(text)
            return lambda: TLSCrypt(key, is_server, window, seconds)
        if is_server:
            server_key = parse_tls_crypt_v2_server_key(text)
            return lambda: TLSCryptV2Server(server_key, window, seconds)
        client_key = parse_tls_crypt_v2_client_key(text)
        return lambda: TLSCryptV2Client(client_key, window, seconds)
    except (ProtocolError, ValueError) as exc:
        raise ConfigError(str(exc), wrap.mode.value if wrap else "", where) from None


def session_config(
    cfg: Config, *, allow_ekm: bool = True, ipv6_underlay: bool = False
) -> SessionConfig:
    """The SessionConfig for this run; a server replaces peer_id per client."""
    username, password = cfg.auth_user_pass or (None, None)
    fallback = cfg.data_ciphers_fallback or (cfg.cipher if cfg.role is Role.P2P else None)
    return SessionConfig(
        role=session_role(cfg),
        tls=tls_config(cfg),
        wrapper_factory=wrapper_factory(cfg),
        data_ciphers=tuple(cfg.data_ciphers),
        data_ciphers_fallback=fallback,
        allow_ekm=allow_ekm,
        username=username,
        password=password,
        reneg_seconds=float(cfg.reneg_sec) if cfg.reneg_sec else None,
        reneg_bytes=cfg.reneg_bytes or None,
        reneg_packets=cfg.reneg_pkts or None,
        hand_window=float(cfg.hand_window),
        tran_window=float(cfg.tran_window),
        tls_mtu=cfg.tls_mtu,
        udp_overhead=48 if ipv6_underlay else 28,
        tun_mtu=cfg.tun_mtu,
    )
