"""Letting a client in: what openvpn does between key method 2 and the PUSH_REPLY.

In openvpn's order (ssl_verify.c, multi.c multi_connection_established): the identity
(certificate CN, or the username with `username-as-common-name`), `tls-verify`,
`auth-user-pass-verify`, the client-config-dir entry (`ccd-exclusive`, `disable`), the
tunnel addresses (`ifconfig-push` or the pool), `client-connect` and the file it may
write, and last `duplicate-cn` (without it an older session with the same name goes).
Any refusal ends in AUTH_FAILED[,reason] for the client. Scripts run as asyncio
subprocesses, so other clients keep being served meanwhile.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Protocol

from cryptography import x509

from xdp_ovpn.config import Config
from xdp_ovpn.control import ccd
from xdp_ovpn.control.instance import ClientInstance
from xdp_ovpn.control.pool import AddressPool, PoolExhausted
from xdp_ovpn.control.scripts import ScriptPeer, ScriptRunner
from xdp_ovpn.proto.events import AuthRequest

UNDEF = "UNDEF"  # openvpn's common name for a client without certificate or username


class AdmissionContext(Protocol):
    """What admission needs of the server (control.server.Server is one)."""

    cfg: Config
    scripts: ScriptRunner
    log: logging.Logger
    pool4: AddressPool | None
    pool6: AddressPool | None

    def drop_duplicates(self, client: ClientInstance) -> None:
        """Close the other sessions with `client`'s common name (no duplicate-cn)."""


class Refused(Exception):
    """The client may not connect; `reason` goes into AUTH_FAILED,<reason> when set."""

    def __init__(self, log: str, reason: str | None = None) -> None:
        super().__init__(log)
        self.log = log
        self.reason = reason


def script_peer(server: AdmissionContext, client: ClientInstance) -> ScriptPeer:
    """What the script hooks are told about a client."""
    netmask = None
    if client.prefix4 is not None:
        netmask = str(ipaddress.IPv4Network(f"0.0.0.0/{client.prefix4}").netmask)
    return ScriptPeer(
        remote=(client.driver.remote[0], client.driver.remote[1]),
        common_name=client.common_name,
        username=client.username,
        chain=client.chain,
        peer_info=client.peer_info,
        vpn_ipv4=client.vpn_ipv4,
        netmask4=netmask,
        vpn_ipv6=client.vpn_ipv6,
        netbits6=client.prefix6,
        connected_since=client.connected_since,
    )


def identify(server: AdmissionContext, client: ClientInstance, event: AuthRequest) -> None:
    """Take the client's name, certificate chain and peer-info from its AuthRequest."""
    cn = event.common_name
    if server.cfg.username_as_common_name and event.username:
        cn = event.username
    client.common_name = cn or UNDEF
    client.username = event.username
    client.peer_info = dict(event.peer_info)
    client.chain = tuple(x509.load_der_x509_certificate(der) for der in event.chain)
    client.driver.common_name = client.common_name


async def admit(server: AdmissionContext, client: ClientInstance, event: AuthRequest) -> None:
    """Run every check; raises Refused. On success the client has its entry and addresses."""
    cfg, scripts, log = server.cfg, server.scripts, server.log
    label = client.driver.label
    if not await scripts.tls_verify(script_peer(server, client)):
        raise Refused("tls-verify script refused the certificate")
    if scripts.configured("user-pass-verify"):
        if event.username is None:
            raise Refused("Auth Username/Password was not provided by peer")
        result = await scripts.auth_user_pass_verify(
            script_peer(server, client), event.username, event.password or "")
        if not result.accepted:
            raise Refused(f"Auth Username/Password verification failed for peer "
                          f"(username '{event.username}')", result.reason)
        log.info("%s TLS: Username/Password authentication succeeded for username '%s'",
                 label, event.username)
    entry = ccd.ClientConfig()
    if cfg.client_config_dir is not None:
        found = ccd.lookup(cfg.client_config_dir, client.common_name or UNDEF)
        if found is None and cfg.ccd_exclusive:
            raise Refused("no client-config-dir entry and ccd-exclusive is set")
        entry = found or entry
        _check_entry(server, client, entry)
    client.entry = entry
    allocate(server, client)
    client.connected_since = time.time()
    result = await scripts.client_connect(script_peer(server, client))
    if not result.accepted:
        raise Refused("client-connect script refused the client")
    if result.config is not None:
        _check_entry(server, client, result.config)
        client.entry = entry.update(result.config)
        if result.config.ifconfig_push or result.config.ifconfig_ipv6_push:
            release(server, client)
            allocate(server, client)
    client.admitted = True
    if not cfg.duplicate_cn and client.common_name != UNDEF:
        server.drop_duplicates(client)


def _check_entry(server: AdmissionContext, client: ClientInstance, entry: ccd.ClientConfig) -> None:
    for error in entry.errors:
        server.log.info("%s %s", client.driver.label, error)
    if entry.disable:
        raise Refused(f"client is disabled in {entry.source}")


def allocate(server: AdmissionContext, client: ClientInstance) -> None:
    """The addresses from ifconfig-push / ifconfig-ipv6-push, else from the pools."""
    entry = client.entry
    owner = None if server.cfg.duplicate_cn else client.common_name
    push4, push6 = entry.ifconfig_push, entry.ifconfig_ipv6_push
    fixed4 = (str(push4[0]), ipaddress.IPv4Network(f"0.0.0.0/{push4[1]}").prefixlen) \
        if push4 else None
    fixed6 = (str(push6[0].ip), push6[0].network.prefixlen) if push6 else None
    try:
        client.vpn_ipv4, client.prefix4, client.fixed4 = _address(server.pool4, fixed4, owner)
        client.vpn_ipv6, client.prefix6, client.fixed6 = _address(server.pool6, fixed6, owner)
    except PoolExhausted as exc:
        raise Refused(str(exc)) from None


def _address(pool: AddressPool | None, fixed: tuple[str, int] | None,
             owner: str | None) -> tuple[str | None, int | None, bool]:
    """(address, prefix length, fixed?): the pushed one (kept out of the pool) or a pool's."""
    if fixed is not None:
        if pool is not None:
            pool.reserve(fixed[0])
        return fixed[0], fixed[1], True
    if pool is not None:
        return pool.allocate(owner), pool.prefixlen, False
    return None, None, False


def release(server: AdmissionContext, client: ClientInstance) -> None:
    """Give the client's addresses back (pool addresses and reserved fixed ones alike)."""
    if client.vpn_ipv4 and server.pool4 is not None:
        server.pool4.release(client.vpn_ipv4)
    if client.vpn_ipv6 and server.pool6 is not None:
        server.pool6.release(client.vpn_ipv6)
    client.vpn_ipv4 = client.vpn_ipv6 = None
    client.prefix4 = client.prefix6 = None
    client.fixed4 = client.fixed6 = False


def push_options(server: AdmissionContext, client: ClientInstance) -> list[str]:
    """The PUSH_REPLY options: the server's push list as the entry edits it, then ifconfig."""
    cfg = server.cfg
    options = client.entry.push_options(cfg.push)
    if client.vpn_ipv4 and client.prefix4 is not None:
        mask = ipaddress.IPv4Network(f"0.0.0.0/{client.prefix4}").netmask
        options.append(f"ifconfig {client.vpn_ipv4} {mask}")
    if client.vpn_ipv6 and client.prefix6 is not None:
        pushed = client.entry.ifconfig_ipv6_push
        remote = pushed[1] if pushed and pushed[1] else (
            cfg.ifconfig_ipv6[0].ip if cfg.ifconfig_ipv6 else None)
        if remote is not None:
            options.append(f"ifconfig-ipv6 {client.vpn_ipv6}/{client.prefix6} {remote}")
    return options
