"""The server: many clients on one socket, an address pool, peer-ids, PUSH_REPLY.

Like openvpn's multi.c in shape, but only the shell: each client is a SessionDriver; the
session decides everything protocol; admission.py decides who gets in and with what
(scripts, client-config-dir, addresses); this module turns session events and data-plane
notifications into DCO verbs, kernel routes for iroutes, script calls and log lines, and
reports who is connected (status, management, metrics).

Client-to-client traffic goes through the kernel, as with DCO: a packet from one client
to another leaves the TUN and the kernel routes it back in (the server host needs
IP forwarding). `client-to-client` itself therefore changes nothing here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import time
from collections.abc import Awaitable, Callable

from xdp_ovpn.config import Config
from xdp_ovpn.control import admission
from xdp_ovpn.control.admission import Refused
from xdp_ovpn.control.driver import SessionDriver
from xdp_ovpn.control.endpoint import UdpEndpoint
from xdp_ovpn.control.instance import ClientInstance
from xdp_ovpn.control.log import get_logger, peer_label
from xdp_ovpn.control.netconfig import in_netlink_thread
from xdp_ovpn.control.peerkeys import PeerKeys
from xdp_ovpn.control.pool import AddressPool
from xdp_ovpn.control.scripts import ScriptRunner
from xdp_ovpn.control.status import ClientSnapshot, StatusSnapshot
from xdp_ovpn.dataplane.api import (
    BAD_SOURCE,
    Address,
    DataPlane,
    DataPlaneError,
    KeyNeedsRenewal,
    Notification,
    PeerExpired,
    PeerFloated,
    PeerStats,
)
from xdp_ovpn.dataplane.factory import offloaded
from xdp_ovpn.dataplane.tun import Tun, TunError
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
KILL_GRACE = 1.0  # seconds a killed client has to receive its RESTART/HALT


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
        self.scripts = ScriptRunner(cfg, cfg.dev)
        self.tun: Tun | None = None
        self._next_client_id = 0
        self._tasks: set[asyncio.Task] = set()
        # Link bytes of clients that left (load-stats counts since start) and event counts.
        self.departed_rx = self.departed_tx = 0
        self.departed_bad_sources = 0
        self.counts = {"handshakes_total": 0, "auth_failures_total": 0,
                       "connections_total": 0, "disconnections_total": 0}
        # Server side of keepalive: the pushed timeout, not openvpn's doubled one, so that a
        # dead client is gone within the timeout the operator wrote.
        timeout = cfg.keepalive[1] if cfg.keepalive else cfg.ping_restart
        self.keepalive = (float(cfg.ping), float(timeout)) if cfg.ping and timeout else None
        self.ignored_packets = 0
        # Set by shutdown: a client that got EXIT and reconnects at once must wait for the
        # restarted instance, not be admitted (with the old config) by the one going away.
        self.closing = False

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

    def attach_tun(self, tun: Tun) -> None:
        """The server's TUN, once open: iroute routes go on it; scripts see its name."""
        self.tun = tun
        self.scripts.base["dev"] = tun.name

    def remember_leases(self, leases: dict[str, tuple[str | None, str | None]]) -> None:
        """Seed the pools from ifconfig-pool-persist: CN -> (IPv4, IPv6)."""
        for cn, (v4, v6) in leases.items():
            if v4 and self.pool4 is not None:
                self.pool4.remember(cn, v4)
            if v6 and self.pool6 is not None:
                self.pool6.remember(cn, v6)

    def leases(self) -> dict[str, tuple[str | None, str | None]]:
        """CN -> (IPv4, IPv6) the pools remember (what ifconfig-pool-persist saves)."""
        v4 = self.pool4.leases() if self.pool4 is not None else {}
        v6 = self.pool6.leases() if self.pool6 is not None else {}
        return {cn: (v4.get(cn), v6.get(cn)) for cn in {**v4, **v6}}

    def _spawn(self, coro: Awaitable[None], what: str) -> None:
        """Run a coroutine beside the loop's work; a failure is one log line."""
        async def guarded() -> None:
            try:
                await coro
            except Exception as exc:  # a failing hook must not take the server down
                self.log.warning("%s failed: %s", what, exc)

        task = self.loop.create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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
            if client is None and not self.closing:
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
        client = ClientInstance(peer_id, driver, PeerKeys(self.dataplane, addr),
                                client_id=self._next_client_id)
        self._next_client_id += 1
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
            if event.key_id != 0:
                session.accept_auth()  # renegotiation: same identity (tls_lock_common_name)
                return
            self.counts["handshakes_total"] += 1
            admission.identify(self, client, event)
            # Scripts, CCD and addresses run as a task; the session waits for accept_auth
            # (and derives keys right after it, so the addresses are known by then).
            client.task = self.loop.create_task(self._admit(client, event))
            self._tasks.add(client.task)
            client.task.add_done_callback(self._tasks.discard)
        elif isinstance(event, SessionEstablished):
            if client.common_name is None:
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
            self.stats(client)  # the counters die with the data-plane peer
            client.keys.remove()
        elif isinstance(event, HandshakeFailed):
            self.log.info("%s TLS Error: %s", label, event.reason)
            if event.fatal:
                self._remove(client, event.reason)
        elif isinstance(event, SessionClosed):
            self._remove(client, event.reason)
        elif isinstance(event, AuthFailed | RestartRequested | ControlMessageReceived):
            self.log.debug("%s control message ignored: %s", label, event)

    async def _admit(self, client: ClientInstance, event: AuthRequest) -> None:
        """Run admission, then answer the session (it may have gone meanwhile)."""
        refused: Refused | None = None
        try:
            await admission.admit(self, client, event)
        except Refused as exc:
            refused = exc
        except Exception as exc:  # a broken hook refuses one client, never the server
            refused = Refused(f"admission failed: {exc}")
        client.task = None
        session = client.session
        if self.by_peer_id.get(client.peer_id) is not client or client.driver.closed:
            self._after_client(client)
            return
        try:
            if refused is None:
                session.accept_auth()
            else:
                self.counts["auth_failures_total"] += 1
                self.log.info("%s TLS Auth Error: %s", client.driver.label, refused.log)
                admission.release(self, client)
                session.reject_auth(refused.reason)
        except ProtocolError as exc:  # the session gave up waiting (hand-window)
            self.log.info("%s authentication came too late: %s", client.driver.label, exc)
        client.driver.pump()

    def _push(self, client: ClientInstance) -> None:
        driver = client.driver
        options = admission.push_options(self, client)
        self.log.info("%s SENT CONTROL [%s]: 'PUSH_REPLY,%s'", driver.label,
                      client.common_name or "", ",".join(options))
        client.session.send_push_reply(options)

    def _install_keys(self, client: ClientInstance, event: KeysReady) -> None:
        keys = client.keys
        first = not keys.installed and keys.peer_id is None
        if not keys.installed:
            keys.vpn_ipv4, keys.vpn_ipv6 = client.vpn_ipv4, client.vpn_ipv6
            keys.iroutes = client.entry.all_iroutes
            if self.keepalive:
                keys.keepalive = self.keepalive
        try:
            keys.keys_ready(event)
        except DataPlaneError as exc:
            self.log.info("%s cannot install keys: %s", client.driver.label, exc)
            self._remove(client, str(exc))
            return
        client.cipher = event.cipher
        if first:
            self.counts["connections_total"] += 1
            self._add_routes(client)
            self._spawn(self._learn(client, "add"), "learn-address")
        how = ("EKM" if event.ekm else "PRF") + (", epoch data format" if event.epoch else "")
        self.log.info("%s Data Channel: cipher '%s', peer-id %d, key-id %d (%s)",
                      client.driver.label, event.cipher, event.peer_id, event.key_id, how)

    # -- iroutes and learn-address -------------------------------------------

    def _add_routes(self, client: ClientInstance) -> None:
        """A kernel route per iroute via the client's VPN address, as openvpn does with DCO."""
        tun = self.tun
        if tun is None:
            return
        for net in client.entry.iroutes:
            client.routes.append(str(net))
            self._spawn(self._route(tun.add_route, str(net), client.vpn_ipv4), "iroute")
        for net6 in client.entry.iroutes_ipv6:
            client.routes.append(str(net6))
            self._spawn(self._route(tun.add_route, str(net6), client.vpn_ipv6), "iroute")

    async def _route(self, fn: Callable[..., None], *args: str | None) -> None:
        try:
            await in_netlink_thread(fn, *args)
        except TunError as exc:
            self.log.warning("iroute: %s", exc)

    def _del_routes(self, client: ClientInstance) -> None:
        tun, routes, client.routes = self.tun, client.routes, []
        if tun is None or tun.closed:
            return
        for net in routes:
            self._spawn(self._route(tun.del_route, net), "iroute")

    async def _learn(self, client: ClientInstance, operation: str) -> None:
        """learn-address for the VPN addresses and every iroute, in that order."""
        addresses = [a for a in (client.vpn_ipv4, client.vpn_ipv6) if a]
        addresses += client.entry.all_iroutes
        peer = admission.script_peer(self, client) if operation != "delete" else None
        for address in addresses:
            await self.scripts.learn_address(operation, address, peer)

    # -- data-plane notifications ---------------------------------------------

    def notification(self, note: Notification) -> None:
        client = self.by_peer_id.get(note.peer_id)
        if client is None:
            return
        if isinstance(note, PeerExpired):
            self.stats(client)  # the last counters read are all that is left
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
        """Forget a client: data-plane peer, routes, addresses, peer-id, session; then run
        client-disconnect and learn-address delete for it."""
        if self.by_peer_id.get(client.peer_id) is not client:
            return
        del self.by_peer_id[client.peer_id]
        if self.by_remote.get(client.driver.remote) is client:
            del self.by_remote[client.driver.remote]
        stats = self.stats(client)
        client.keys.remove()
        self._del_routes(client)
        client.driver.close()
        rx, tx = self._link_bytes(client, stats)
        self.departed_rx += rx
        self.departed_tx += tx
        if stats is not None:
            self._log_bad_sources(client, stats, time.monotonic(), final=True)
            self.departed_bad_sources += stats.drops.get(BAD_SOURCE, 0)
        self.log.debug("%s removed: %s", client.driver.label, reason)
        if client.task is None:  # else the admission task finishes the job
            self._after_client(client, rx, tx)

    def _after_client(self, client: ClientInstance, rx: int = 0, tx: int = 0) -> None:
        """Scripts for a client that left, then its addresses go back to the pools."""
        if client.admitted:
            client.admitted = False
            self.counts["disconnections_total"] += 1
            peer = admission.script_peer(self, client)
            installed = client.keys.peer_id is not None

            async def goodbye() -> None:
                await self.scripts.client_disconnect(peer, rx, tx)
                if installed:
                    await self._learn(client, "delete")

            self._spawn(goodbye(), "client-disconnect")
        admission.release(self, client)

    # -- what the operator sees -----------------------------------------------

    def stats(self, client: ClientInstance) -> PeerStats | None:
        """The data plane's counters for a client (the last ones read once it is gone)."""
        if client.keys.installed:
            with contextlib.suppress(DataPlaneError):
                client.last_stats = self.dataplane.get_peer(client.peer_id)
                self._log_bad_sources(client, client.last_stats, time.monotonic())
        return client.last_stats

    def read_counters(self) -> None:
        """Read every client's counters, for what they are logged for (BAD_SOURCE)."""
        for client in self.clients():
            self.stats(client)

    def feed_key_traffic(self) -> None:
        """reneg-bytes/-pkts: hand each session what its key carried since the last read."""
        for client in self.clients():
            client.driver.add_data_traffic(*client.keys.take_traffic())

    def _log_bad_sources(self, client: ClientInstance, stats: PeerStats, now: float,
                         final: bool = False) -> None:
        line = client.bad_sources.due(stats, now, final)
        if line is not None:
            self.log.warning("%s %s", client.driver.label, line)

    @staticmethod
    def _link_bytes(client: ClientInstance, stats: PeerStats | None) -> tuple[int, int]:
        """Link bytes both ways, data and control channel together, as openvpn counts."""
        rx, tx = client.driver.rx_bytes, client.driver.tx_bytes
        if stats is not None:
            rx, tx = rx + stats.link_rx_bytes, tx + stats.link_tx_bytes
        return rx, tx

    def snapshot(self) -> StatusSnapshot:
        """Every connected client (admitted, keys installed) for status and management."""
        now, mono = time.time(), time.monotonic()
        out = []
        for c in self.by_peer_id.values():
            if not c.admitted or not c.keys.installed or c.connected_since is None:
                continue
            stats = self.stats(c)
            rx, tx = self._link_bytes(c, stats)
            last = stats.last_rx if stats is not None else None
            out.append(ClientSnapshot(
                common_name=c.common_name or admission.UNDEF,
                real_address=(c.driver.remote[0], c.driver.remote[1]),
                peer_id=c.peer_id, connected_since=c.connected_since,
                vpn_ipv4=c.vpn_ipv4, vpn_ipv6=c.vpn_ipv6,
                iroutes=tuple(c.entry.all_iroutes), bytes_received=rx, bytes_sent=tx,
                packets_received=stats.link_rx_packets if stats else 0,
                packets_sent=stats.link_tx_packets if stats else 0,
                username=c.username, client_id=c.client_id, cipher=c.cipher,
                last_ref=now - (mono - last) if last is not None else None,
                drops=dict(stats.drops) if stats else {},
            ))  # fmt: skip
        bad = self.departed_bad_sources + sum(c.drops.get(BAD_SOURCE, 0) for c in out)
        return StatusSnapshot(out, now=now, dco=offloaded(self.dataplane),
                              engine=self.dataplane.engine,
                              bad_source_drops=bad)

    def totals(self) -> tuple[int, int]:
        """Link bytes in and out since start (load-stats)."""
        rx, tx = self.departed_rx, self.departed_tx
        for c in self.snapshot().clients:
            rx, tx = rx + c.bytes_received, tx + c.bytes_sent
        return rx, tx

    # -- killing clients (management) -------------------------------------------

    def kill(self, client: ClientInstance, message: str = "RESTART") -> None:
        """Tell the client to restart (or halt), then drop it shortly after."""
        with contextlib.suppress(ProtocolError):
            client.session.send_control_message(message)
            client.driver.pump()
        self.loop.call_later(KILL_GRACE, self._remove, client, f"killed ({message})")

    def kill_by_cn(self, cn: str) -> int:
        victims = [c for c in self.by_peer_id.values() if c.admitted and c.common_name == cn]
        for c in victims:
            self.kill(c)
        return len(victims)

    def kill_by_address(self, host: str, port: int) -> int:
        victims = [c for c in self.by_peer_id.values()
                   if c.admitted and _host(c.driver.remote[0]) == host
                   and c.driver.remote[1] == port]
        for c in victims:
            self.kill(c)
        return len(victims)

    def kill_by_cid(self, cid: int, message: str) -> bool:
        for c in self.by_peer_id.values():
            if c.client_id == cid:
                self.kill(c, message)
                return True
        return False

    def drop_duplicates(self, client: ClientInstance) -> None:
        """Without duplicate-cn a new session replaces older ones with the same name."""
        for other in list(self.by_peer_id.values()):
            if other is not client and other.common_name == client.common_name:
                self.log.info("MULTI: new connection by client '%s' will cause previous "
                              "active sessions by this client to be dropped.  Remember to "
                              "use the --duplicate-cn option if you want multiple clients "
                              "using the same certificate or username to concurrently "
                              "connect.", client.common_name)
                self._remove(other, "duplicate common name")

    def peer_ids(self) -> list[int]:
        return [c.peer_id for c in self.by_peer_id.values() if c.keys.installed]

    def clients(self) -> list[ClientInstance]:
        return list(self.by_peer_id.values())

    async def shutdown(self, grace: float = 1.0) -> None:
        """Send EXIT to every client, give the messages a moment, then drop everything."""
        self.closing = True
        for client in self.clients():
            if client.task is not None:
                client.task.cancel()
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
        if self._tasks:  # client-disconnect and learn-address delete of the last clients
            await asyncio.wait(set(self._tasks), timeout=self.scripts.timeout)


def _host(host: str) -> str:
    """An IPv4-mapped address as plain IPv4 (as management `kill IP:port` names it)."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host
