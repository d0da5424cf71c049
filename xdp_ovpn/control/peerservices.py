"""What an operator runs around a client or p2p endpoint: `status`, `management` and
`--metrics`, as around a server (services.py), for its one peer.

The management interface follows the endpoint's states (CONNECTING ... CONNECTED,
RECONNECTING, EXITING) with openvpn's client columns (tunnel address, the server's and
our own socket), prints the client's "OpenVPN STATISTICS" for `status`, and answers the
server's commands with openvpn's error; metrics show the peer while connected.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from xdp_ovpn.config import Config
from xdp_ovpn.control.client import SinglePeer
from xdp_ovpn.control.clientstatus import ClientStatusFile, statistics
from xdp_ovpn.control.management import (
    ManagementHooks,
    ManagementInterface,
    listen_args,
    read_password_file,
)
from xdp_ovpn.control.metrics import MetricsServer, MetricsSources
from xdp_ovpn.control.services import worker_health, xdp_verdicts
from xdp_ovpn.dataplane.api import DataPlane


def _socket_columns(addr: tuple | None) -> str:
    """openvpn's `address,port` of a socket in a state line; "" when unknown."""
    if not addr:
        return ""
    host = addr[0]
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            host = str(ip.ipv4_mapped)
    except ValueError:
        pass
    return f"{host},{addr[1]}"


class SinglePeerServices:
    """Opened in `start`, closed in `close`; the role tells its states as they change."""

    def __init__(self, cfg: Config, role: SinglePeer, dataplane: DataPlane,
                 metrics: tuple[str, int] | None, signal: Callable[[str], bool]) -> None:
        self.cfg, self.role, self.dataplane = cfg, role, dataplane
        self.metrics_listen, self.signal = metrics, signal
        self.status: ClientStatusFile | None = None
        self.management: ManagementInterface | None = None
        self.metrics: MetricsServer | None = None

    async def start(self) -> None:
        cfg, role = self.cfg, self.role
        if cfg.status is not None:
            self.status = ClientStatusFile(cfg.status, cfg.status_seconds, role.counters)
            self.status.start()
        if cfg.management is not None:
            m = cfg.management
            address, port = listen_args(m.address, m.port)
            password = read_password_file(m.password_file) if m.password_file else None
            hooks = ManagementHooks(role.snapshot, signal=self.signal, totals=self._link_bytes,
                                    statistics=lambda: statistics(role.counters()))
            self.management = ManagementInterface(hooks, password)
            await self.management.start(address, port)
            role.state_listener = self._state_changed
        if self.metrics_listen is not None:
            sources = MetricsSources(role.snapshot, counters=lambda: role.counts,
                                     verdicts=xdp_verdicts(self.dataplane),
                                     workers=worker_health(self.dataplane), single_peer=True)
            self.metrics = MetricsServer(sources)
            await self.metrics.start(*self.metrics_listen)

    def _link_bytes(self) -> tuple[int, int]:
        counters = self.role.counters()
        return counters.link_read, counters.link_write

    def _state_changed(self, name: str, description: str) -> None:
        assert self.management is not None
        role = self.role
        local = None
        if self.cfg.bind:  # nobind: openvpn shows no local socket
            local = role.endpoint.sock.getsockname()
        remote = role.remote if name not in ("CONNECTING", "RECONNECTING") else None
        self.management.set_state(name, description, role.tunnel_ipv4, role.tunnel_ipv6,
                                  _socket_columns(remote), _socket_columns(local))

    async def close(self, reason: str = "SIGTERM") -> None:
        if self.management is not None:
            self.role.state_listener = None
            self.management.set_state("EXITING", reason)
            await self.management.close()
        if self.metrics is not None:
            await self.metrics.close()
        if self.status is not None:
            self.status.close()
