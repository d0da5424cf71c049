"""`xdp-ovpn run`: open the socket, start the data plane, run the role, shut down cleanly.

The order matters: the UDP socket is bound and the data-plane worker forked before the
event loop starts (no fork from inside asyncio); SIGTERM/SIGINT make the role say EXIT to
its peers, then the peers, the TUN, our routes and the worker go, in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket

from xdp_ovpn import __version__
from xdp_ovpn.config import Config, Role
from xdp_ovpn.control.client import Client, PeerToPeer, SinglePeer
from xdp_ovpn.control.endpoint import (
    UdpEndpoint,
    open_client_socket,
    open_server_socket,
)
from xdp_ovpn.control.log import get_logger, setup_logging
from xdp_ovpn.control.netconfig import in_netlink_thread, open_tun, settings_from_config
from xdp_ovpn.control.server import Server
from xdp_ovpn.control.services import ServerServices
from xdp_ovpn.control.sessionconfig import session_config
from xdp_ovpn.dataplane.api import DataPlane, DataPlaneError
from xdp_ovpn.dataplane.factory import open_dataplane
from xdp_ovpn.dataplane.tun import Tun


def _open_socket(cfg: Config) -> socket.socket:
    if cfg.role is Role.SERVER:
        return open_server_socket(cfg.local, cfg.lport, cfg.proto)
    port = cfg.lport if cfg.bind else 0
    if cfg.proto == "udp4" or (cfg.local and ":" not in cfg.local):
        return open_client_socket(socket.AF_INET, cfg.local, port)
    try:
        return open_client_socket(socket.AF_INET6, cfg.local, port)
    except OSError:  # no IPv6 here: an IPv4 socket reaches IPv4 remotes
        return open_client_socket(socket.AF_INET, cfg.local, port)


def run(cfg: Config, data_path: str = "auto", allow_ekm: bool = True,
        metrics: tuple[str, int] | None = None, engine: str = "auto") -> int:
    """Run as what the config says until a signal (0) or a fatal outcome (1); a server
    also serves Prometheus metrics on `metrics` (host, port) when given."""
    log = setup_logging(cfg.verb, cfg.log, cfg.log_append)
    log.info("xdp-ovpn %s starting as %s", __version__, cfg.role.value)
    for warning in cfg.warnings:
        log.info("WARNING: %s", warning)
    sock = _open_socket(cfg)
    dataplane: DataPlane | None = None
    try:
        ipv6_underlay = sock.family == socket.AF_INET6 and any(
            ":" in r.host for r in cfg.remotes
        )
        scfg = session_config(cfg, allow_ekm=allow_ekm, ipv6_underlay=ipv6_underlay)
        dataplane = open_dataplane(
            data_path, sock, single_peer=cfg.role is not Role.SERVER,
            replay_window=cfg.replay_window, replay_time=cfg.replay_time, log=log,
            engine=engine,
            interfaces=cfg.xdp_interfaces, xdp_mode=cfg.xdp_mode,
            control_limits=cfg.xdp_control_limit,
        )
        if cfg.writepid:
            cfg.writepid.write_text(f"{os.getpid()}\n")
        return asyncio.run(_main(cfg, scfg, sock, dataplane, metrics))
    finally:
        if dataplane is not None:
            dataplane.close()
        sock.close()
        if cfg.writepid:
            with contextlib.suppress(OSError):
                cfg.writepid.unlink()


async def _main(cfg: Config, scfg, sock: socket.socket, dataplane: DataPlane,
                metrics: tuple[str, int] | None = None) -> int:
    loop = asyncio.get_running_loop()
    log = get_logger()
    stop = asyncio.Event()
    role: Server | SinglePeer
    tun: Tun | None = None
    services: ServerServices | None = None
    endpoint = UdpEndpoint(sock, dataplane, lambda data, addr: role.datagram_received(data, addr))
    if cfg.role is Role.SERVER:
        role = Server(cfg, scfg, endpoint, dataplane, loop)
    elif cfg.role is Role.CLIENT:
        role = Client(cfg, scfg, endpoint, dataplane, loop)
    else:
        role = PeerToPeer(cfg, scfg, endpoint, dataplane, loop)

    def on_signal(signum: int) -> None:
        log.info("%s[hard,] received, process exiting", signal.Signals(signum).name)
        stop.set()
        if isinstance(role, SinglePeer):
            role.stop()

    def on_status() -> None:  # SIGUSR2, as openvpn: dump the status to the log
        for peer_id in role.peer_ids():
            with contextlib.suppress(DataPlaneError):
                log.info("STATUS %s", dataplane.get_peer(peer_id))

    def on_management_signal(name: str) -> bool:
        if name in ("SIGTERM", "SIGINT"):
            on_signal(signal.Signals[name])
        elif name == "SIGUSR2":
            on_status()
        else:
            return False  # SIGHUP / SIGUSR1 restarts are not supported
        return True

    def on_notifications() -> None:
        for note in dataplane.notifications():
            role.notification(note)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    loop.add_signal_handler(signal.SIGUSR2, on_status)
    loop.add_reader(dataplane.notification_fd(), on_notifications)
    endpoint.start(loop)
    log.info("UDP link local: %s", _sockname(sock))
    code = 0
    try:
        if isinstance(role, Server):
            name = cfg.dev if cfg.dev_name_fixed else "tun%d"
            tun, _ = await in_netlink_thread(open_tun, name, settings_from_config(cfg),
                                             cfg.tun_mtu, None, dataplane.tun_vnet_hdr)
            dataplane.attach_tun(tun.fileno(), cfg.tun_mtu)
            role.attach_tun(tun)
            log.info("TUN/TAP device %s opened", tun.name)
            services = ServerServices(cfg, role, dataplane, metrics, on_management_signal)
            await services.start()
            await services.drop_privileges()
            log.info("Initialization Sequence Completed")
            services.ready(cfg.ifconfig[0] if cfg.ifconfig else "",
                           str(cfg.ifconfig_ipv6[0].ip) if cfg.ifconfig_ipv6 else "")
            await stop.wait()
            await role.shutdown()
        else:
            if isinstance(role, PeerToPeer):
                role.start_tunnel()
            task = asyncio.create_task(role.run())
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if task in done:
                reason = task.result()
                log.info("Exiting: %s", reason)
                code = 0 if reason in ("stopped", "shutdown") else 1
            await role.shutdown()
            if not task.done():
                await task
    finally:
        if services is not None:
            await services.close()
        endpoint.stop()
        loop.remove_reader(dataplane.notification_fd())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            loop.remove_signal_handler(signum)
        if tun is not None:
            await in_netlink_thread(tun.close)
    return code


def _sockname(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[AF_INET{'6' if sock.family == socket.AF_INET6 else ''}]{host}:{port}"
