"""The server: many clients on one socket, an address pool, peer-ids, PUSH_REPLY.

Like openvpn's multi.c in shape, but only the shell: each client is a SessionDriver; the
session decides everything protocol; this module picks the peer-id and addresses, builds
the per-client push options, and turns session events and data-plane notifications into
DCO verbs and log lines.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time

from xdp_ovpn.config import Config
from xdp_ovpn.control.driver import SessionDriver
from xdp_ovpn.control.endpoint import UdpEndpoint
from xdp_ovpn.control.log import get_logger, peer_label
from xdp_ovpn.control.peerkeys import PeerKeys
from xdp_ovpn.control.pool import AddressPool, PoolExhausted
from xdp_ovpn.dataplane.api import (
    Address,
    DataPlane,
    DataPlaneError,
    KeyNeedsRenewal,
    Notification,
    PeerExpired,
    PeerFloated,
)
from xdp_ovpn.proto.constants import MAX_PEER_ID, Opcode
from xdp_ovpn.proto.errors import ProtocolError
from xdp_ovpn.proto.events import (
    AuthFailed,
    AuthRequest,
    ControlMessageReceived,
    Event,
    HandshakeFailed,
    KeyRetired,
    KeysReady,
    PeerExit,
    PushRequestReceived,
    RestartRequested,
    SessionClosed,
    SessionEstablished,
)
from xdp_ovpn.proto.packet import peek_op
from xdp_ovpn.proto.session import Session, SessionConfig

_CLIENT_RESETS = (Opcode.HARD_RESET_CLIENT_V2, Opcode.HARD_RESET_CLIENT_V3)


@dataclasses.dataclass(eq=False)
class ClientInstance:
    """One connected (or connecting) client."""

    peer_id: int
    driver: SessionDriver
    keys: PeerKeys
    vpn_ipv4: str | None = None
    vpn_ipv6: str | None = None

    @property
    def session(self) -> Session:
        return self.driver.session


class Server:
    """openvpn --mode server, driving sessions and the data plane."""

    def __init__(self, cfg: Config, session_cfg: SessionConfig, endpoint: UdpEndpoint,
                 dataplane: DataPlane, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.session_cfg = session_cfg
        self.endpoint = endpoint
        self.dataplane = dataplane
        self.loop = loop
        self.log = get_logger()
        self.by_remote: dict[Address, ClientInstance] = {}
        self.by_peer_id: dict[int, ClientInstance] = {}
        self.pool4 = self._pool4()
        self.pool6 = self._pool6()
        # Server side of keepalive: the pushed timeout, not openvpn's doubled one, so that a
        # dead client is gone within the timeout the operator wrote.
        timeout = cfg.keepalive[1] if cfg.keepalive else cfg.ping_restart
        self.keepalive = (float(cfg.ping), float(timeout)) if cfg.ping and timeout else None
        self.ignored_packets = 0

    def _pool4(self) -> AddressPool | None:
        if not self.cfg.ifconfig_pool:
            return None
        first, last = self.cfg.ifconfig_pool
        mask = self.cfg.ifconfig_pool_netmask or ipaddress.IPv4Address("255.255.255.0")
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        return AddressPool(str(first), str(last), prefix)

    def _pool6(self) -> AddressPool | None:
        net = self.cfg.ifconfig_ipv6_pool
        if net is None:
            return None
        base = self.cfg.ifconfig_ipv6_pool_base or net[0x1000]
        return AddressPool(str(base), str(net[-2]), net.prefixlen)

    # -- datagrams ------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        client = self.by_remote.get(addr)
        try:
            opcode, key_id = peek_op(data)
        except ProtocolError:
            self.ignored_packets += 1
            return
        if opcode in _CLIENT_RESETS and key_id == 0 and len(data) >= 9:
            if client is not None and client.session.remote_session_id not in (None, data[1:9]):
                # The same address starts over (client restart): the old instance goes.
                self._remove(client, "new session from the same address")
                client = None
            if client is None:
                client = self._new_client(addr)
        if client is None:
            self.ignored_packets += 1
            return
        client.driver.datagram_received(data)

    def _new_client(self, addr: Address) -> ClientInstance | None:
        if len(self.by_peer_id) >= self.cfg.max_clients:
            self.log.info("MULTI: new incoming connection would exceed maximum number of clients")
            return None
        peer_id = next(i for i in range(MAX_PEER_ID + 1) if i not in self.by_peer_id)
        cfg = dataclasses.replace(self.session_cfg, peer_id=peer_id)
        session = Session(cfg, time.monotonic())
        driver = SessionDriver(session, addr, self.endpoint.sendto, self._on_event, self.loop)
        client = ClientInstance(peer_id, driver, PeerKeys(self.dataplane, addr))
        self.by_remote[addr] = client
        self.by_peer_id[peer_id] = client
        self.log.debug("%s new session, peer-id %d", driver.label, peer_id)
        return client

    # -- session events -------------------------------------------------------

    def _on_event(self, driver: SessionDriver, event: Event) -> None:
        client = self.by_remote.get(driver.remote)
        if client is None or client.driver is not driver:
            return
        label = driver.label
        session = driver.session
        if isinstance(event, AuthRequest):
            driver.common_name = event.common_name
            # Addresses before keys: the session derives keys as soon as auth is accepted.
            if event.key_id == 0 and not self._allocate(client):
                session.reject_auth("no address available")
                return
            session.accept_auth()
        elif isinstance(event, SessionEstablished):
            driver.common_name = event.common_name
            self.log.info("%s Peer Connection Initiated with [AF_INET]%s", driver.label,
                          peer_label(None, driver.remote))
        elif isinstance(event, PushRequestReceived):
            self._push(client)
        elif isinstance(event, KeysReady):
            self._install_keys(client, event)
        elif isinstance(event, KeyRetired):
            client.keys.key_retired(event)
        elif isinstance(event, PeerExit):
            # The session lingers to ack the EXIT; the data-plane peer goes now.
            self.log.info("%s SIGTERM[soft,remote-exit] received, client-instance exiting", label)
            client.keys.remove()
        elif isinstance(event, HandshakeFailed):
            self.log.info("%s TLS Error: %s", label, event.reason)
            if event.fatal:
                self._remove(client, event.reason)
        elif isinstance(event, SessionClosed):
            self._remove(client, event.reason)
        elif isinstance(event, AuthFailed | RestartRequested | ControlMessageReceived):
            self.log.debug("%s control message ignored: %s", label, event)

    def _allocate(self, client: ClientInstance) -> bool:
        owner = client.driver.common_name
        try:
            if self.pool4 and client.vpn_ipv4 is None:
                client.vpn_ipv4 = self.pool4.allocate(owner)
            if self.pool6 and client.vpn_ipv6 is None:
                client.vpn_ipv6 = self.pool6.allocate(owner)
        except PoolExhausted as exc:
            self.log.info("%s %s", client.driver.label, exc)
            return False
        return True

    def _push(self, client: ClientInstance) -> None:
        driver = client.driver
        owner = driver.common_name
        options = list(self.cfg.push)
        if client.vpn_ipv4 and self.pool4:
            mask = ipaddress.IPv4Network(f"0.0.0.0/{self.pool4.prefixlen}").netmask
            options.append(f"ifconfig {client.vpn_ipv4} {mask}")
        if client.vpn_ipv6 and self.pool6 and self.cfg.ifconfig_ipv6:
            server6 = self.cfg.ifconfig_ipv6[0].ip
            options.append(f"ifconfig-ipv6 {client.vpn_ipv6}/{self.pool6.prefixlen} {server6}")
        self.log.info("%s SENT CONTROL [%s]: 'PUSH_REPLY,%s'", driver.label, owner or "",
                      ",".join(options))
        client.session.send_push_reply(options)

    def _install_keys(self, client: ClientInstance, event: KeysReady) -> None:
        keys = client.keys
        if not keys.installed:
            keys.vpn_ipv4, keys.vpn_ipv6 = client.vpn_ipv4, client.vpn_ipv6
            if self.keepalive:
                keys.keepalive = self.keepalive
        try:
            keys.keys_ready(event)
        except DataPlaneError as exc:
            self.log.info("%s cannot install keys: %s", client.driver.label, exc)
            self._remove(client, str(exc))
            return
        how = "EKM" if event.ekm else "PRF"
        self.log.info("%s Data Channel: cipher '%s', peer-id %d, key-id %d (%s)",
                      client.driver.label, event.cipher, event.peer_id, event.key_id, how)

    # -- data-plane notifications ---------------------------------------------

    def notification(self, note: Notification) -> None:
        client = self.by_peer_id.get(note.peer_id)
        if client is None:
            return
        if isinstance(note, PeerExpired):
            client.keys.gone = True
            if note.reason == "exit":
                self.log.info("%s SIGTERM[soft,remote-exit] received, client-instance exiting",
                              client.driver.label)
            else:
                self.log.info("%s [%s] Inactivity timeout (--ping-restart), restarting",
                              client.driver.label, client.driver.common_name or "")
            self._remove(client, note.reason)
        elif isinstance(note, PeerFloated):
            old = client.driver.remote
            self.log.info("%s peer floated to %s", client.driver.label,
                          peer_label(None, note.new_remote))
            if self.by_remote.get(old) is client:
                del self.by_remote[old]
            self.by_remote[note.new_remote] = client
            client.driver.remote = note.new_remote
            client.keys.floated(note.new_remote)
        elif isinstance(note, KeyNeedsRenewal):
            client.session.renegotiate(time.monotonic())
            client.driver.pump()

    # -- teardown -------------------------------------------------------------

    def _remove(self, client: ClientInstance, reason: str) -> None:
        """Forget a client: data-plane peer, addresses, peer-id, session."""
        if self.by_peer_id.get(client.peer_id) is not client:
            return
        del self.by_peer_id[client.peer_id]
        if self.by_remote.get(client.driver.remote) is client:
            del self.by_remote[client.driver.remote]
        client.keys.remove()
        if client.vpn_ipv4 and self.pool4:
            self.pool4.release(client.vpn_ipv4)
        if client.vpn_ipv6 and self.pool6:
            self.pool6.release(client.vpn_ipv6)
        client.driver.close()
        self.log.debug("%s removed: %s", client.driver.label, reason)

    def peer_ids(self) -> list[int]:
        return [c.peer_id for c in self.by_peer_id.values() if c.keys.installed]

    def clients(self) -> list[ClientInstance]:
        return list(self.by_peer_id.values())

    async def shutdown(self, grace: float = 1.0) -> None:
        """Send EXIT to every client, give the messages a moment, then drop everything."""
        now = time.monotonic()
        for client in self.clients():
            client.session.close(now)
            client.driver.pump()
        deadline = now + grace
        while time.monotonic() < deadline and any(
            not c.session.is_closed for c in self.clients()
        ):
            await asyncio.sleep(0.05)
        for client in self.clients():
            self._remove(client, "shutdown")
