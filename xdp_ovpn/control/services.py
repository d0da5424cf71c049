"""What an operator runs around a server: `status`, `management`, `--metrics`,
`ifconfig-pool-persist`, systemd readiness, and `user`/`group` once all of it is open;
and a periodic read of the data plane's counters (the bad-source-address log).

Everything reads the server through `Server.snapshot()` (one ClientSnapshot per connected
client, from the data plane's own counters), so the status file, the management
interface and the metrics endpoint never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from xdp_ovpn.capabilities import CAP_NET_ADMIN
from xdp_ovpn.config import Config
from xdp_ovpn.control import poolpersist, sdnotify
from xdp_ovpn.control.badsource import BAD_SOURCE_LOG_SECONDS
from xdp_ovpn.control.log import get_logger
from xdp_ovpn.control.management import (
    ManagementHooks,
    ManagementInterface,
    listen_args,
    read_password_file,
)
from xdp_ovpn.control.metrics import MetricsServer, MetricsSources, WorkerHealth
from xdp_ovpn.control.netconfig import in_netlink_thread, run_in_netlink_thread
from xdp_ovpn.control.peerkeys import RENEG_POLL_SECONDS
from xdp_ovpn.control.privdrop import PrivilegeError, drop_privileges
from xdp_ovpn.control.server import Server
from xdp_ovpn.control.status import StatusFile
from xdp_ovpn.dataplane.api import DataPlane, DataPlaneError


def _alive(pid: int) -> bool:
    """The worker process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _forwarding() -> bool:
    try:
        return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    except OSError:
        return True  # unknown: say nothing


def worker_health(dataplane: DataPlane) -> Callable[[], Sequence[WorkerHealth]]:
    def health() -> list[WorkerHealth]:
        pid = dataplane.pid
        extra = {}
        if dataplane.interfaces:  # the XDP path: RX queues on AF_XDP, and those left out
            extra = {"af_xdp_queues": dataplane.af_xdp_queues,
                     "af_xdp_queues_unbound": len(dataplane.unbound)}
        return [WorkerHealth(dataplane.name, bool(pid) and _alive(pid), dataplane.restarts,
                             extra)]
    return health


def xdp_verdicts(dataplane: DataPlane) -> Callable[[], Mapping[str, int]] | None:
    """Verdict counters summed over every interface the XDP classifier is attached to."""
    if not dataplane.interfaces:
        return None

    def verdicts() -> dict[str, int]:
        total: dict[str, int] = {}
        for ifname in dataplane.interfaces:
            for verdict, n in dataplane.maps(ifname).verdict_counts().items():
                name = verdict.name.lower()
                total[name] = total.get(name, 0) + n
        return total
    return verdicts


class ServerServices:
    """Opened in `start` (as root), announced in `ready`, closed in `close`."""

    def __init__(self, cfg: Config, server: Server, dataplane: DataPlane,
                 metrics: tuple[str, int] | None, signal: Callable[[str], bool]) -> None:
        self.cfg = cfg
        self.server = server
        self.dataplane = dataplane
        self.metrics_listen = metrics
        self.signal = signal
        self.log = get_logger()
        self.status: StatusFile | None = None
        self.management: ManagementInterface | None = None
        self.metrics: MetricsServer | None = None
        self.pool_file: poolpersist.PersistFile | None = None
        self._pool_task: asyncio.Task | None = None
        self._counters_task: asyncio.Task | None = None
        self._reneg_task: asyncio.Task | None = None

    async def start(self) -> None:
        cfg, server = self.cfg, self.server
        if cfg.client_to_client and not _forwarding():
            self.log.info("Note: client-to-client traffic is routed by the kernel (as with "
                          "DCO) and net.ipv4.ip_forward is 0: clients cannot reach each other")
        if cfg.ifconfig_pool_persist is not None:
            self._load_pool(cfg.ifconfig_pool_persist)
        if cfg.status is not None:
            self.status = StatusFile(cfg.status, cfg.status_version, cfg.status_seconds,
                                     server.snapshot)
            self.status.start()
        if cfg.management is not None:
            m = cfg.management
            address, port = listen_args(m.address, m.port)
            password = read_password_file(m.password_file) if m.password_file else None
            hooks = ManagementHooks(
                server.snapshot, server.kill_by_cn, server.kill_by_address,
                server.kill_by_cid, self.signal, server.totals,
                status_version=cfg.status_version)
            self.management = ManagementInterface(hooks, password)
            await self.management.start(address, port)
            self.management.set_state("CONNECTING")
        # Counters are read when someone asks (status, management, metrics) and at least
        # this often, so that a client sending from addresses not its own is logged.
        self._counters_task = asyncio.get_running_loop().create_task(
            self._every(BAD_SOURCE_LOG_SECONDS, server.read_counters))
        if cfg.reneg_bytes or cfg.reneg_pkts:
            self._reneg_task = asyncio.get_running_loop().create_task(
                self._every(RENEG_POLL_SECONDS, server.feed_key_traffic))
        if self.metrics_listen is not None:
            sources = MetricsSources(server.snapshot, counters=lambda: server.counts,
                                     verdicts=xdp_verdicts(self.dataplane),
                                     workers=worker_health(self.dataplane))
            self.metrics = MetricsServer(sources)
            await self.metrics.start(*self.metrics_listen)

    def _load_pool(self, path: Path) -> None:
        leases, notes = poolpersist.load(path)
        for note in notes:
            self.log.info("%s", note)
        if not self.cfg.duplicate_cn:  # with duplicate-cn names do not own addresses
            self.server.remember_leases({cn: (le.ipv4, le.ipv6) for cn, le in leases.items()})
        seconds = self.cfg.ifconfig_pool_persist_seconds
        if seconds > 0:  # 0: read the file, never write it (openvpn's meaning)
            self.pool_file = poolpersist.PersistFile(path)
            self._pool_task = asyncio.get_running_loop().create_task(self._every(
                seconds, self.save_pool))

    async def _every(self, seconds: float, call: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                call()
            except Exception as exc:  # the next round may do better; the VPN goes on
                self.log.warning("%s: %s", getattr(call, "__name__", "periodic task"), exc)

    def save_pool(self) -> None:
        if self.pool_file is None:
            return
        leases = {cn: poolpersist.Lease(cn, v4, v6)
                  for cn, (v4, v6) in self.server.leases().items()}
        try:
            self.pool_file.save(leases)
        except OSError as exc:
            self.log.warning("ifconfig-pool-persist: cannot write %s: %s",
                             self.pool_file.path, exc.strerror)

    async def drop_privileges(self) -> None:
        """`user`/`group`, keeping CAP_NET_ADMIN for iroute routes and the TUN's removal,
        and what the data plane needs to start a replacement worker.

        Only the netlink thread needs them, so the switch happens there: setuid applies
        to every thread, capabilities stay only in the thread that asked to keep them. The
        worker switches too: it handles every packet off the wire.
        """
        cfg = self.cfg
        if cfg.user is None and cfg.group is None:
            return
        keep = {CAP_NET_ADMIN} | self.dataplane.restart_capabilities
        ident = await in_netlink_thread(drop_privileges, cfg.user, cfg.group, keep)
        try:
            self.dataplane.drop_privileges(ident.uid, ident.gid, run_in_netlink_thread)
        except DataPlaneError as exc:
            raise PrivilegeError(str(exc)) from None
        self.log.info("UID set to %s, GID set to %s", cfg.user or "-", cfg.group or "-")

    def ready(self, local4: str, local6: str) -> None:
        """The server is up: management state, systemd."""
        if self.management is not None:
            self.management.set_state("ASSIGN_IP", "", local4, local6)
            self.management.set_state("CONNECTED", "SUCCESS", local4, local6)
        sdnotify.notify("READY=1", "STATUS=Initialization Sequence Completed")

    async def close(self) -> None:
        if self.management is not None:
            self.management.set_state("EXITING", "SIGTERM")
            await self.management.close()
        if self.metrics is not None:
            await self.metrics.close()
        for task in (self._pool_task, self._counters_task, self._reneg_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.save_pool()
        if self.pool_file is not None:
            self.pool_file.close()
        if self.status is not None:
            self.status.close()
