"""One peer at a time: the pulling client and the 2.6 TLS peer-to-peer endpoint.

Both run a restart loop like openvpn's SIGUSR1 loop: a session per connection attempt;
ping-restart (PeerExpired from the data plane), RESTART, a failed handshake or the peer's
EXIT end the attempt; after connect-retry seconds the next remote is tried.

The client applies what the server pushed (ifconfig, routes, redirect-gateway) to a TUN
it creates for each connection and deletes at the end of it (openvpn without persist-tun);
the p2p endpoint configures its TUN once from its own options.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from xdp_ovpn.config import Config
from xdp_ovpn.control.clientstatus import Counters
from xdp_ovpn.control.driver import SessionDriver
from xdp_ovpn.control.endpoint import (
    UdpEndpoint,
    resolve,
    same_family_address,
    set_socket_buffers,
)
from xdp_ovpn.control.log import get_logger, peer_label
from xdp_ovpn.control.netconfig import (
    AppliedNetwork,
    NetConfigError,
    TunnelSettings,
    close_tun,
    in_netlink_thread,
    open_tun,
    own_route_lines,
    parse_settings,
    set_txqueuelen,
    settings_from_config,
)
from xdp_ovpn.control.peerkeys import RENEG_POLL_SECONDS, PeerKeys
from xdp_ovpn.control.pulled import filter_pushed
from xdp_ovpn.control.scripts import ScriptRunner
from xdp_ovpn.control.status import ClientSnapshot, StatusSnapshot
from xdp_ovpn.control.updown import TunnelScriptFailed, TunnelScripts, foreign_options
from xdp_ovpn.dataplane.api import (
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
from xdp_ovpn.dataplane.tun import Tun
from xdp_ovpn.proto.constants import Opcode
from xdp_ovpn.proto.errors import ProtocolError
from xdp_ovpn.proto.events import (
    AuthFailed,
    AuthPending,
    Event,
    HandshakeFailed,
    KeyRetired,
    KeysReady,
    PeerExit,
    PushReplyReceived,
    RestartRequested,
    SessionClosed,
    SessionEstablished,
)
from xdp_ovpn.proto.packet import peek_op
from xdp_ovpn.proto.session import Session, SessionConfig

_CLIENT_RESETS = (Opcode.HARD_RESET_CLIENT_V2, Opcode.HARD_RESET_CLIENT_V3)
_MAX_RETRY = 30.0


class _Outcome(Exception):
    def __init__(self, reason: str, exit: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.exit = reason, exit


class SinglePeer:
    """The restart loop and event handling shared by client and p2p."""

    pulls = False

    def __init__(self, cfg: Config, session_cfg: SessionConfig, endpoint: UdpEndpoint,
                 dataplane: DataPlane, loop: asyncio.AbstractEventLoop) -> None:
        self.cfg = cfg
        self.session_cfg = session_cfg
        self.endpoint = endpoint
        self.dataplane = dataplane
        self.loop = loop
        self.log = get_logger()
        self.driver: SessionDriver | None = None
        self.keys: PeerKeys | None = None
        self.tun: Tun | None = None
        self.applied: AppliedNetwork | None = None
        self.remote: Address | None = None  # where the current attempt talks to
        self._outcome: asyncio.Future[_Outcome] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._remote_index = 0
        self._tun_generation = 0
        self._last_rx = 0.0
        self._net_pending: asyncio.Future | None = None
        self.connected = False
        self.scripts = TunnelScripts(ScriptRunner(cfg, cfg.dev))
        self.scripts_ready = not self.scripts.configured  # up and route-up have run
        self._script_task: asyncio.Task | None = None
        # remote-random: one shuffle at start, as openvpn does.
        self.remotes = list(cfg.remotes)
        if cfg.remote_random:
            random.shuffle(self.remotes)
        self._failed_attempts = 0  # since the last successful connection
        self._leaving = ""  # why we said EXIT to the peer, while it acknowledges
        self._timeout_exits = self._silence_limit(cfg.ping_restart)[1]
        # What management and metrics show: openvpn's client states (CONNECTING, WAIT,
        # AUTH, GET_CONFIG, ASSIGN_IP, ADD_ROUTES, CONNECTED, RECONNECTING, EXITING),
        # told to `state_listener` as (name, description); the tunnel's own addresses.
        self.state = ""
        self.state_listener: Callable[[str, str], None] | None = None
        self.tunnel_ipv4 = ""
        self.tunnel_ipv6 = ""
        self.connected_since: float | None = None
        self.counts = {"handshakes_total": 0, "renegotiations_total": 0,
                       "connections_total": 0}

    def _next_remote(self) -> Address | None:
        """The next remote in (possibly shuffled) order, resolved; None without any."""
        if not self.remotes:
            return None
        remote = self.remotes[self._remote_index % len(self.remotes)]
        self._remote_index += 1
        _, addr = resolve(remote.host, remote.port, remote.proto)
        return same_family_address(self.endpoint.sock, addr)

    # -- the loop -------------------------------------------------------------

    async def run(self) -> str:
        """Connect, and reconnect, until stopped or told to exit; return why it ended."""
        retry = float(self.cfg.connect_retry or 1)
        self._set_state("CONNECTING")
        while not self._stopping:
            self._outcome = self.loop.create_future()
            self._leaving = ""
            self._last_rx = time.monotonic()
            watchdog = self.loop.create_task(self._silence_watchdog())
            reneg = self.loop.create_task(self._feed_key_traffic())
            try:
                self._set_state("WAIT")
                self._begin()
            except _Outcome as early:
                self._outcome.set_result(early)
            outcome = await self._outcome
            watchdog.cancel()
            reneg.cancel()
            self._end_attempt()
            if outcome.exit or self._stopping:
                return outcome.reason
            self._failed_attempts = 0 if self.connected else self._failed_attempts + 1
            limit = self.cfg.connect_retry_max * max(1, len(self.remotes))
            if self.cfg.connect_retry_max and self._failed_attempts >= limit:
                self.log.info("All connections have been connect-retry-max (%d) times "
                              "unsuccessful, exiting", self.cfg.connect_retry_max)
                return "connect-retry-max"
            self.log.info("SIGUSR1[soft,%s] received, process restarting", outcome.reason)
            self._set_state("RECONNECTING", outcome.reason)
            wait = retry if not self.connected else float(self.cfg.connect_retry or 1)
            cap = float(self.cfg.connect_retry_wait_max or _MAX_RETRY)
            retry = min(retry * 2, cap, _MAX_RETRY)
            self.connected = False
            self.connected_since = None
            self.log.info("Restart pause, %g second(s)", wait)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
        return "stopped"

    async def _silence_watchdog(self) -> None:
        """ping-restart before the data channel is up: the data plane only watches it after.

        openvpn's ping-restart counts every packet from the peer, control ones included;
        a peer that stops answering mid-handshake or before its PUSH_REPLY restarts us too.
        """
        timeout, exits = self._silence_limit(self.cfg.ping_restart)
        if not timeout:
            return
        while True:
            await asyncio.sleep(min(1.0, timeout / 2))
            if self.keys is not None and self.keys.installed:
                continue
            if self.driver is not None and time.monotonic() - self._last_rx > timeout:
                self._inactive(exits)
                return

    async def _feed_key_traffic(self) -> None:
        """reneg-bytes/-pkts: hand the session what its key carried since the last read."""
        if not (self.cfg.reneg_bytes or self.cfg.reneg_pkts):
            return
        while True:
            await asyncio.sleep(RENEG_POLL_SECONDS)
            if self.driver is not None and self.keys is not None:
                self.driver.add_data_traffic(*self.keys.take_traffic())

    def _silence_limit(self, ping_restart: float) -> tuple[float, bool]:
        """The silence that ends the connection, and whether it ends the process
        (ping-exit shorter than ping-restart, or alone)."""
        exit_after = float(self.cfg.ping_exit)
        if exit_after and (not ping_restart or exit_after <= ping_restart):
            return exit_after, True
        return float(ping_restart), False

    def _inactive(self, exits: bool) -> None:
        cn = self.driver.common_name if self.driver else ""
        if exits:
            self.log.info("[%s] Inactivity timeout (--ping-exit), exiting", cn or "")
            self._finish("ping-exit", exit=True)
        else:
            self.log.info("[%s] Inactivity timeout (--ping-restart), restarting", cn or "")
            self._finish("ping-restart")

    def _finish(self, reason: str, exit: bool = False) -> None:
        if self._outcome is not None and not self._outcome.done():
            self._outcome.set_result(_Outcome(self._leaving or reason, exit))

    def restart(self, reason: str) -> None:
        """A soft restart (SIGUSR1, as openvpn's client does): EXIT to the peer, as openvpn's
        explicit-exit-notify does on a restart, then connect again with the same config;
        the process and its management stay."""
        self.loop.create_task(self._restart(reason))

    async def _restart(self, reason: str) -> None:
        await self._say_exit(reason)
        self._finish(reason)

    async def _say_exit(self, reason: str, grace: float = 1.0) -> None:
        """EXIT to the peer when it understands it; wait a little for its acknowledgement.
        The attempt then ends for `reason`, not for the session's own closing."""
        driver = self.driver
        if driver is None or driver.closed:
            return
        self._leaving = reason
        driver.session.close(time.monotonic())
        driver.pump()
        deadline = time.monotonic() + grace
        while not driver.session.is_closed and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def _set_state(self, name: str, description: str = "") -> None:
        self.state = name
        if self.state_listener is not None:
            self.state_listener(name, description)

    def _begin(self) -> None:
        raise NotImplementedError

    def _start_session(self, remote: Address) -> SessionDriver:
        self.remote = remote
        session = Session(self.session_cfg, time.monotonic())
        self.driver = SessionDriver(session, remote, self.endpoint.sendto, self._on_event,
                                    self.loop)
        self.keys = PeerKeys(self.dataplane, remote)
        keepalive = self._local_keepalive()
        if keepalive:
            self.keys.keepalive = keepalive
        return self.driver

    def _local_keepalive(self) -> tuple[float, float] | None:
        timeout, _ = self._silence_limit(self.cfg.ping_restart)
        if self.cfg.ping or timeout:
            return float(self.cfg.ping), timeout
        return None

    def _end_attempt(self) -> None:
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        if self.keys is not None:
            self.keys.remove()
            self.keys = None

    # -- datagrams ------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Address) -> None:
        driver = self.driver
        if driver is None or addr != driver.remote:
            self._unexpected(data, addr)
            return
        self._last_rx = time.monotonic()
        if self.state == "WAIT":  # the peer answered: the TLS handshake is under way
            self._set_state("AUTH")
        driver.datagram_received(data)

    def _unexpected(self, data: bytes, addr: Address) -> None:
        self.log.debug("dropped packet from unexpected %s", peer_label(None, addr))

    # -- events ---------------------------------------------------------------

    def _on_event(self, driver: SessionDriver, event: Event) -> None:
        if driver is not self.driver or self.keys is None:
            return
        if isinstance(event, SessionEstablished):
            driver.common_name = event.common_name
            self.counts["handshakes_total"] += 1
            self.log.info("[%s] Peer Connection Initiated with [AF_INET]%s",
                          event.common_name or "", peer_label(None, driver.remote))
            if self.pulls and not self.connected:
                self._set_state("GET_CONFIG")
        elif isinstance(event, PushReplyReceived):
            self._pushed(event.options)
        elif isinstance(event, KeysReady):
            self._install(event)
        elif isinstance(event, KeyRetired):
            self.keys.key_retired(event)
        elif isinstance(event, AuthFailed):
            self.log.info("AUTH: Received control message: AUTH_FAILED%s",
                          f",{event.reason}" if event.reason else "")
            self._finish("auth-failure", exit=not event.temporary)
        elif isinstance(event, AuthPending):
            self.log.info("AUTH_PENDING received")
        elif isinstance(event, RestartRequested):
            self._finish("server-pushed-halt" if event.halt else "server-pushed-connection-reset",
                         exit=event.halt)
        elif isinstance(event, PeerExit):
            self._finish("remote-exit")
        elif isinstance(event, HandshakeFailed):
            self.log.info("TLS Error: %s", event.reason)
            if event.fatal:
                self._finish("tls-error")
        elif isinstance(event, SessionClosed):
            self._finish(event.reason or "session closed")

    def _pushed(self, options: list[str]) -> None:
        pass

    def _install(self, event: KeysReady) -> None:
        assert self.keys is not None
        if self.keys.installed:
            self.counts["renegotiations_total"] += 1
        try:
            self.keys.keys_ready(event)
        except DataPlaneError as exc:
            self.log.info("cannot install data channel keys: %s", exc)
            self._finish("dataplane-error")
            return
        how = ("EKM" if event.ekm else "PRF") + (", epoch data format" if event.epoch else "")
        self.log.info("Data Channel: cipher '%s', peer-id %d, key-id %d (%s)", event.cipher,
                      event.peer_id, event.key_id, how)
        self._maybe_complete()

    def _maybe_complete(self) -> None:
        """Ready once keys are in and the TUN is attached (what a ping needs)."""
        if (not self.connected and self.tun is not None and self.scripts_ready
                and self.keys and self.keys.installed):
            self.connected = True
            self.connected_since = time.time()
            self.counts["connections_total"] += 1
            self.log.info("Initialization Sequence Completed")
            self._set_state("CONNECTED", "SUCCESS")

    def peer_ids(self) -> list[int]:
        return [self.keys.peer_id] if self.keys and self.keys.installed else []

    def _peer_stats(self) -> PeerStats | None:
        for peer_id in self.peer_ids():
            with contextlib.suppress(DataPlaneError):
                return self.dataplane.get_peer(peer_id)
        return None

    def counters(self) -> Counters:
        """This connection's byte counts (status, SIGUSR2): the data plane's for the data
        channel plus the control channel's."""
        driver = self.driver
        control_rx, control_tx = (driver.rx_bytes, driver.tx_bytes) if driver else (0, 0)
        stats = self._peer_stats()
        if stats is None:
            return Counters(0, 0, control_rx, control_tx, control_rx)
        link_read = stats.link_rx_bytes + control_rx
        return Counters(stats.tx_bytes, stats.rx_bytes, link_read,
                        stats.link_tx_bytes + control_tx, link_read)

    def snapshot(self) -> StatusSnapshot:
        """The peer while connected (none before), for management and metrics; the VPN
        addresses are this end's own."""
        snapshot = StatusSnapshot(dco=offloaded(self.dataplane), engine=self.dataplane.engine)
        driver, stats = self.driver, self._peer_stats()
        if not self.connected or driver is None or stats is None:
            return snapshot
        counters = self.counters()
        snapshot.clients.append(ClientSnapshot(
            common_name=driver.common_name or "", real_address=driver.remote[:2],
            peer_id=stats.peer_id, connected_since=self.connected_since or time.time(),
            vpn_ipv4=self.tunnel_ipv4 or None, vpn_ipv6=self.tunnel_ipv6 or None,
            bytes_received=counters.link_read, bytes_sent=counters.link_write,
            packets_received=stats.link_rx_packets, packets_sent=stats.link_tx_packets,
            drops=dict(stats.drops)))
        return snapshot

    # -- notifications --------------------------------------------------------

    def notification(self, note: Notification) -> None:
        keys = self.keys
        if keys is None or keys.peer_id != note.peer_id:
            return
        if isinstance(note, PeerExpired):
            keys.gone = True
            if note.reason == "exit":
                self._finish("remote-exit")
            else:
                self._inactive(self._timeout_exits)
        elif isinstance(note, PeerFloated) and self.driver is not None:
            self.driver.remote = note.new_remote
            keys.floated(note.new_remote)
        elif isinstance(note, KeyNeedsRenewal) and self.driver is not None:
            self.driver.session.renegotiate(time.monotonic())
            self.driver.pump()

    # -- shutdown -------------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def shutdown(self, grace: float = 1.0) -> None:
        """EXIT to the peer (when it understands it), then remove everything we made."""
        self._stopping = True
        await self._say_exit("shutdown", grace)
        self._finish("shutdown", exit=True)
        self._end_attempt()
        self._close_tun()
        await self.drain_netlink()
        if self._script_task is not None:
            await self._script_task

    def _close_tun(self) -> None:
        tun, applied, self.tun, self.applied = self.tun, self.applied, None, None
        self._tun_generation += 1  # a TUN still being made for the old attempt is dropped
        if tun is not None or applied is not None:
            self._net_pending = in_netlink_thread(close_tun, tun, applied)
            if self.scripts.configured:
                self.scripts_ready = False
                self._script_task = self.loop.create_task(self._run_down(self._net_pending))

    async def _run_down(self, closed: asyncio.Future) -> None:
        """down, after the TUN is gone (openvpn runs it after close, without down-pre)."""
        with contextlib.suppress(Exception):
            await closed
        await self.scripts.down()

    def _open_tun(self, settings: TunnelSettings, server_ip: str | None,
                  foreign: list[str] | None = None) -> None:
        """Make the TUN on the netlink thread; attach it to the data plane when ready, then
        run up and route-up."""
        name = self.cfg.dev if self.cfg.dev_name_fixed else "tun%d"
        mtu = settings.tun_mtu or self.cfg.tun_mtu
        generation = self._tun_generation
        future = in_netlink_thread(open_tun, name, settings, mtu, server_ip,
                                   self.dataplane.tun_vnet_hdr)
        self._net_pending = future

        def ready(done: asyncio.Future) -> None:
            if done.cancelled():
                return
            if (exc := done.exception()) is not None:
                self.log.info("ERROR: cannot configure the tunnel: %s", exc)
                self._finish("tun-error", exit=not self.pulls)
                return
            tun, applied = done.result()
            if generation != self._tun_generation or self._stopping:
                in_netlink_thread(close_tun, tun, applied)
                return
            self.tun, self.applied = tun, applied
            try:
                self.dataplane.attach_tun(tun.fileno(), mtu)
            except DataPlaneError as exc:
                self.log.info("ERROR: data plane refused the TUN: %s", exc)
                self._finish("dataplane-error", exit=True)
                return
            self.log.info("TUN/TAP device %s opened", tun.name)
            self.tunnel_ipv4 = settings.ipv4 or ""
            self.tunnel_ipv6 = (settings.ipv6 or "").split("/")[0]
            self._set_state("ASSIGN_IP")
            self._set_state("ADD_ROUTES")
            if self.cfg.txqueuelen is not None:
                in_netlink_thread(set_txqueuelen, tun.name, self.cfg.txqueuelen)
            if self.scripts.configured:
                self._script_task = self.loop.create_task(
                    self._run_up(settings, tun.name, mtu, foreign or []))
            else:
                self._maybe_complete()

        future.add_done_callback(ready)

    async def _run_up(self, settings: TunnelSettings, dev: str, mtu: int,
                      foreign: list[str]) -> None:
        try:
            await self.scripts.up(settings, dev, mtu, foreign)
        except TunnelScriptFailed as exc:
            self.log.info("ERROR: %s", exc)
            self._finish("up-script-failed", exit=True)
            return
        self.scripts_ready = True
        self._maybe_complete()

    async def drain_netlink(self) -> None:
        """Wait until every queued TUN/route change has been made."""
        await in_netlink_thread(lambda: None)


class Client(SinglePeer):
    """openvpn --client: connect, pull, apply, reconnect."""

    pulls = True

    def _begin(self) -> None:
        addr = self._next_remote()
        assert addr is not None  # a client has at least one remote (config check)
        self.log.info("UDP link remote: %s", peer_label(None, addr))
        self._start_session(addr).pump()

    def _pushed(self, options: list[str]) -> None:
        self.log.info("PUSH: Received control message: 'PUSH_REPLY,%s'", ",".join(options))
        pulled = filter_pushed(self.cfg, options)
        for option in pulled.ignored:
            self.log.info("Pushed option removed by filter: '%s'", option)
        if pulled.rejected is not None:
            self.log.info("Pushed option rejected by filter: '%s'. Restarting.", pulled.rejected)
            self._finish("pull-filter-reject")
            return
        lines = pulled.accepted + own_route_lines(self.cfg)
        try:
            settings = parse_settings(lines, TunnelSettings(topology=self.cfg.topology))
        except NetConfigError as exc:
            self.log.info("ERROR: cannot apply pushed options: %s", exc)
            self._finish("pushed-options-error")
            return
        if settings.sndbuf or settings.rcvbuf:  # openvpn applies pushed ones too
            set_socket_buffers(self.endpoint.sock, settings.sndbuf, settings.rcvbuf)
        if self.tun is None:
            self._open_tun(settings, self.remote[0] if self.remote else None,
                           foreign_options(pulled.accepted))
        # else: persist-tun kept the TUN (and the worker still holds it) across the restart
        if settings.ping or settings.ping_restart:
            interval = float(settings.ping or self.cfg.ping)
            timeout, self._timeout_exits = self._silence_limit(
                float(settings.ping_restart or self.cfg.ping_restart))
            assert self.keys is not None
            self.keys.set_keepalive(interval, timeout)

    def _end_attempt(self) -> None:
        super()._end_attempt()
        if not self.cfg.persist_tun:
            self._close_tun()


class PeerToPeer(SinglePeer):
    """2.6 TLS peer-to-peer: tls-client starts, tls-server waits; own ifconfig and routes."""

    def start_tunnel(self) -> None:
        """Configure the TUN from our own ifconfig / routes once, before the loop; with
        redirect-gateway the (first) remote keeps its route outside the tunnel."""
        peer = None
        if self.cfg.redirect_gateway is not None and self.remotes:
            first = self.remotes[0]
            peer = resolve(first.host, first.port, first.proto)[1][0]
        self._open_tun(settings_from_config(self.cfg), peer)

    def _begin(self) -> None:
        self.expected = self._next_remote()
        if self.cfg.tls_client:
            if self.expected is None:
                raise _Outcome("tls-client needs a remote", exit=True)
            self._start_session(self.expected).pump()
        # tls-server: the session starts with the peer's reset (_unexpected).

    def _unexpected(self, data: bytes, addr: Address) -> None:
        if not self.cfg.tls_server:
            return super()._unexpected(data, addr)
        try:
            opcode, key_id = peek_op(data)
        except ProtocolError:
            return
        allowed = self.expected is None or self.cfg.float or addr[0] == self.expected[0]
        if opcode not in _CLIENT_RESETS or key_id != 0 or not allowed:
            return super()._unexpected(data, addr)
        if self.driver is not None:  # a new peer session replaces the old attempt
            self._end_attempt()
        self._start_session(addr).datagram_received(data)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        driver = self.driver
        if (driver is not None and addr == driver.remote and self.cfg.tls_server
                and self._is_new_peer_session(data, driver.session.remote_session_id)):
            self.log.info("peer restarted: new session")
            self._end_attempt()
            self._start_session(addr).datagram_received(data)
            return
        super().datagram_received(data, addr)

    @staticmethod
    def _is_new_peer_session(data: bytes, current: bytes | None) -> bool:
        """A key-id 0 client reset under a new session-id: the peer restarted."""
        try:
            opcode, key_id = peek_op(data)
        except ProtocolError:
            return False
        return (opcode in _CLIENT_RESETS and key_id == 0 and len(data) >= 9
                and current not in (None, data[1:9]))

    def _end_attempt(self) -> None:
        super()._end_attempt()  # the TUN stays: it is ours, not the peer's
