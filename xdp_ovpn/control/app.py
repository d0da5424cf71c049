"""`xdp-ovpn run`: open the socket, start the data plane, run the role, shut down cleanly.

The order matters: the UDP socket is bound and the data-plane worker forked before the
event loop starts (no fork from inside asyncio); SIGTERM/SIGINT make the role say EXIT to
its peers, then the peers, the TUN, our routes and the worker go, in that order.

Signals as openvpn: SIGHUP re-reads the config and restarts the instance, SIGUSR1
restarts it with the same config (both say EXIT to the peers first, and both are also
the management `signal` command), SIGUSR2 writes the status to the log. A restart
closes everything and opens it again in this process; a SIGHUP whose config has errors
logs them and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass

from xdp_ovpn import __version__
from xdp_ovpn.config import Config, ConfigError, Role, ignored_notes
from xdp_ovpn.control.client import Client, PeerToPeer, SinglePeer
from xdp_ovpn.control.clientstatus import statistics
from xdp_ovpn.control.endpoint import (
    UdpEndpoint,
    open_client_socket,
    open_server_socket,
    set_socket_buffers,
)
from xdp_ovpn.control.log import get_logger, setup_logging
from xdp_ovpn.control.netconfig import (
    in_netlink_thread,
    open_tun,
    set_txqueuelen,
    settings_from_config,
)
from xdp_ovpn.control.peerservices import SinglePeerServices
from xdp_ovpn.control.server import Server
from xdp_ovpn.control.services import ServerServices
from xdp_ovpn.control.sessionconfig import session_config
from xdp_ovpn.control.status import render
from xdp_ovpn.control.updown import TunnelScriptFailed, TunnelScripts
from xdp_ovpn.dataplane.api import DataPlane, DataPlaneError
from xdp_ovpn.dataplane.factory import open_dataplane
from xdp_ovpn.dataplane.mss import mssfix_mss
from xdp_ovpn.dataplane.tun import Tun

Reload = Callable[[], Config]


@dataclass
class _Restart:
    """The instance ended for a restart: with this config (re-read on SIGHUP)."""

    cfg: Config
    signal: str


def _open_socket(cfg: Config) -> socket.socket:
    sock = _bound_socket(cfg)
    set_socket_buffers(sock, cfg.sndbuf, cfg.rcvbuf)
    return sock


def _bound_socket(cfg: Config) -> socket.socket:
    if cfg.role is Role.SERVER:
        return open_server_socket(cfg.local, cfg.lport, cfg.proto)
    port = cfg.lport if cfg.bind else 0
    if cfg.proto == "udp4" or (cfg.local and ":" not in cfg.local):
        return open_client_socket(socket.AF_INET, cfg.local, port)
    try:
        return open_client_socket(socket.AF_INET6, cfg.local, port)
    except OSError:  # no IPv6 here: an IPv4 socket reaches IPv4 remotes
        return open_client_socket(socket.AF_INET, cfg.local, port)


def _ipv6_underlay(sock: socket.socket, cfg: Config) -> bool:
    """Whether the tunnel's packets travel in IPv6 (40-byte headers for mssfix and the
    control channel's packet size): a client's remote says it (its socket is dual-stack),
    a server's IPv6-only socket (udp6) does; a dual-stack server keeps IPv4's figures."""
    if sock.family != socket.AF_INET6:
        return False
    if cfg.role is Role.SERVER:
        return bool(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    return any(":" in r.host for r in cfg.remotes)


def run(cfg: Config, data_path: str = "auto", allow_ekm: bool = True,
        metrics: tuple[str, int] | None = None, reload: Reload | None = None,
        engine: str = "auto", workers: int | None = None) -> int:
    """Run as what the config says until a signal (0) or a fatal outcome (1); a server
    also serves Prometheus metrics on `metrics` (host, port) when given. `reload` reads
    the config again (SIGHUP); without it SIGHUP restarts with the same config.
    A client or p2p endpoint serves the same metrics for its one peer."""
    if cfg.nice:
        os.nice(cfg.nice)
    append = cfg.log_append
    while True:
        outcome = _run_instance(cfg, data_path, allow_ekm, metrics, reload, append, engine,
                                workers)
        if not isinstance(outcome, _Restart):
            return outcome
        cfg = outcome.cfg
        append = True  # a restart goes on in the same log, as openvpn's does
        get_logger().info("%s[soft,restart] received, restarting", outcome.signal)


def _run_instance(cfg: Config, data_path: str, allow_ekm: bool,
                  metrics: tuple[str, int] | None, reload: Reload | None,
                  log_append: bool, engine: str, workers: int | None) -> int | _Restart:
    log = setup_logging(cfg.verb, cfg.log, log_append)
    log.info("xdp-ovpn %s starting as %s", __version__, cfg.role.value)
    for warning in cfg.warnings:
        log.info("WARNING: %s", warning)
    for note in ignored_notes(cfg):
        log.info("NOTE: %s", note)
    sock = _open_socket(cfg)
    dataplane: DataPlane | None = None
    try:
        ipv6_underlay = _ipv6_underlay(sock, cfg)
        scfg = session_config(cfg, allow_ekm=allow_ekm, ipv6_underlay=ipv6_underlay)
        dataplane = open_dataplane(
            data_path, sock, single_peer=cfg.role is not Role.SERVER,
            replay_window=cfg.replay_window, replay_time=cfg.replay_time, log=log,
            engine=engine, workers=workers,
            interfaces=cfg.xdp_interfaces, xdp_mode=cfg.xdp_mode,
            control_limits=cfg.xdp_control_limit,
            mss=mssfix_mss(cfg.mssfix, cfg.mssfix_mode, cfg.tun_mtu, ipv6_underlay),
            mss_epoch=mssfix_mss(cfg.mssfix, cfg.mssfix_mode, cfg.tun_mtu, ipv6_underlay,
                                 epoch=True),
        )
        # The epoch data format is offered only where the engine can do it.
        scfg = dataclasses.replace(scfg, epoch_data=dataplane.epoch_format)
        if cfg.writepid:
            cfg.writepid.write_text(f"{os.getpid()}\n")
        return asyncio.run(_Instance(cfg, scfg, sock, dataplane, metrics, reload).main())
    finally:
        if dataplane is not None:
            dataplane.close()
        sock.close()
        if cfg.writepid:
            with contextlib.suppress(OSError):
                cfg.writepid.unlink()


class _Instance:
    """One run of the role, from the socket's first datagram to the last EXIT."""

    def __init__(self, cfg: Config, scfg, sock: socket.socket, dataplane: DataPlane,
                 metrics: tuple[str, int] | None, reload: Reload | None) -> None:
        self.cfg, self.scfg, self.sock, self.dataplane = cfg, scfg, sock, dataplane
        self.metrics, self.reload = metrics, reload
        self.log = get_logger()
        self.stop = asyncio.Event()
        self.restart: _Restart | None = None
        self.role: Server | SinglePeer
        self.privileges_dropped = False
        self.exit_reason = "SIGTERM"  # a single peer's, for management's EXITING

    # -- signals ----------------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        self.log.info("%s[hard,] received, process exiting", signal.Signals(signum).name)
        self._stop()

    def _stop(self) -> None:
        self.stop.set()
        if isinstance(self.role, SinglePeer):
            self.role.stop()

    def on_restart(self, signum: int) -> None:
        """SIGHUP: re-read the config, then restart; SIGUSR1: restart as configured."""
        name = signal.Signals(signum).name
        if signum == signal.SIGUSR1 and isinstance(self.role, SinglePeer):
            # openvpn's client: reconnect in place; management and metrics stay up.
            self.log.info("SIGUSR1 received: reconnecting")
            self.role.restart("SIGUSR1")
            return
        if self.privileges_dropped:
            self.log.info("%s ignored: after user/group this process cannot open the TUN "
                          "and the data path again; restart the service instead", name)
            return
        cfg = self.cfg
        if signum == signal.SIGHUP and self.reload is not None:
            try:
                cfg = self.reload()
                session_config(cfg)  # keys, wrapping and TLS policy, as the restart takes them
            except ConfigError as exc:
                for line in str(exc).splitlines():
                    self.log.info("SIGHUP: config not reloaded: %s", line)
                return
        self.log.info("%s received: EXIT to the peers, then restart", name)
        self.restart = _Restart(cfg, name)
        self._stop()

    def on_status(self) -> None:  # SIGUSR2, as openvpn: the status report to the log
        role = self.role
        lines = (render(role.snapshot(), 1) if isinstance(role, Server)
                 else statistics(role.counters()))
        for line in lines:
            self.log.info("%s", line)
        for peer_id in role.peer_ids():  # and the data plane's own counters of each peer
            with contextlib.suppress(DataPlaneError):
                self.log.info("STATUS %s", self.dataplane.get_peer(peer_id))

    def on_management_signal(self, name: str) -> bool:
        handlers = {"SIGTERM": self.on_signal, "SIGINT": self.on_signal,
                    "SIGHUP": self.on_restart, "SIGUSR1": self.on_restart}
        if name == "SIGUSR2":
            self.on_status()
        elif name in handlers:
            handlers[name](signal.Signals[name])
        else:
            return False
        return True

    # -- the run ----------------------------------------------------------------------

    async def main(self) -> int | _Restart:
        cfg, dataplane = self.cfg, self.dataplane
        loop = asyncio.get_running_loop()
        endpoint = UdpEndpoint(self.sock, dataplane,
                               lambda data, addr: self.role.datagram_received(data, addr))
        if cfg.role is Role.SERVER:
            self.role = Server(cfg, self.scfg, endpoint, dataplane, loop)
        elif cfg.role is Role.CLIENT:
            self.role = Client(cfg, self.scfg, endpoint, dataplane, loop)
        else:
            self.role = PeerToPeer(cfg, self.scfg, endpoint, dataplane, loop)

        def on_notifications() -> None:
            for note in dataplane.notifications():
                self.role.notification(note)

        signals = {signal.SIGTERM: self.on_signal, signal.SIGINT: self.on_signal,
                   signal.SIGHUP: self.on_restart, signal.SIGUSR1: self.on_restart}
        for signum, handler in signals.items():
            loop.add_signal_handler(signum, handler, signum)
        loop.add_signal_handler(signal.SIGUSR2, self.on_status)
        loop.add_reader(dataplane.notification_fd(), on_notifications)
        endpoint.start(loop)
        self.log.info("UDP link local: %s", _sockname(self.sock))
        try:
            if isinstance(self.role, Server):
                code = await self._serve(self.role)
            else:
                code = await self._single_peer(self.role)
        finally:
            endpoint.stop()
            loop.remove_reader(dataplane.notification_fd())
            for signum in (*signals, signal.SIGUSR2):
                loop.remove_signal_handler(signum)
        return self.restart if self.restart is not None else code

    async def _serve(self, server: Server) -> int:
        cfg = self.cfg
        tun: Tun | None = None
        services: ServerServices | None = None
        scripts = TunnelScripts(server.scripts)
        try:
            name = cfg.dev if cfg.dev_name_fixed else "tun%d"
            settings = settings_from_config(cfg)
            tun, _ = await in_netlink_thread(open_tun, name, settings, cfg.tun_mtu, None,
                                             self.dataplane.tun_vnet_hdr)
            self.dataplane.attach_tun(tun.fileno(), cfg.tun_mtu)
            if cfg.txqueuelen is not None:
                await in_netlink_thread(set_txqueuelen, tun.name, cfg.txqueuelen)
            server.attach_tun(tun)
            self.log.info("TUN/TAP device %s opened", tun.name)
            await scripts.up(settings, tun.name, cfg.tun_mtu)
            services = ServerServices(cfg, server, self.dataplane, self.metrics,
                                      self.on_management_signal)
            await services.start()
            await services.drop_privileges()
            self.privileges_dropped = cfg.user is not None or cfg.group is not None
            self.log.info("Initialization Sequence Completed")
            services.ready(cfg.ifconfig[0] if cfg.ifconfig else "",
                           str(cfg.ifconfig_ipv6[0].ip) if cfg.ifconfig_ipv6 else "")
            await self.stop.wait()
            await server.shutdown()
        except TunnelScriptFailed as exc:
            self.log.info("ERROR: %s, exiting", exc)
            await server.shutdown()
            return 1
        finally:
            if services is not None:
                await services.close()
            if tun is not None:
                await in_netlink_thread(tun.close)
                await scripts.down()
        return 0

    async def _single_peer(self, role: SinglePeer) -> int:
        services = SinglePeerServices(self.cfg, role, self.dataplane, self.metrics,
                                      self.on_management_signal)
        try:
            await services.start()
            return await self._run_single_peer(role)
        finally:
            # EXITING says why, as openvpn's does: the signal, or the role's own end.
            await services.close(self.restart.signal if self.restart else self.exit_reason)

    async def _run_single_peer(self, role: SinglePeer) -> int:
        if isinstance(role, PeerToPeer):
            role.start_tunnel()
        task = asyncio.create_task(role.run())
        stopper = asyncio.create_task(self.stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        code = 0
        if task in done:
            reason = task.result()
            if reason not in ("stopped", "shutdown"):
                self.exit_reason = reason
            self.log.info("Exiting: %s", reason)
            code = 0 if reason in ("stopped", "shutdown") else 1
        await role.shutdown()
        if not task.done():
            await task
        return code


def _sockname(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[AF_INET{'6' if sock.family == socket.AF_INET6 else ''}]{host}:{port}"
