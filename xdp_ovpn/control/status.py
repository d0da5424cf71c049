"""The server's status report (`status FILE [N]`, `status-version 1|2|3`, management `status`).

The text is openvpn 2.6's, line for line (multi.c: multi_print_status), so that the tools
that read openvpn's status files and management output (openvpn-monitor, the Prometheus
exporters, home-grown scripts) read ours unchanged. The server feeds a `StatusSnapshot`;
`render` turns it into lines; `StatusFile` rewrites the file atomically every N seconds.

Byte counts are link bytes, as openvpn reports them: UDP payload received from and sent
to the client, control channel included. One line is ours: GLOBAL STATS counts packets
clients sent from addresses not theirs, once there are any.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xdp_ovpn import __version__
from xdp_ovpn.control.log import get_logger

# The openvpn release whose formats we reproduce. Tools take the version from the
# second word of the title (openvpn-monitor picks its status parser by it).
COMPAT_RELEASE = "2.6.14"


def title(dco: bool, engine: str = "") -> str:
    """openvpn's title line; `[DCO]` only while the data channel is offloaded (on XDP),
    then our own release and the data plane's per-packet engine."""
    flags = "[SSL (OpenSSL)] [AEAD]" + (" [DCO]" if dco else "")
    ours = f"xdp-ovpn {__version__}" + (f" engine {engine}" if engine else "")
    return (f"OpenVPN {COMPAT_RELEASE} {platform.machine() or 'x86_64'}-pc-linux-gnu "
            f"{flags} [{ours}]")


UNDEF = "UNDEF"  # openvpn's username when the client sent none (tls_username)

_CLIENT_HEADER = (
    "Common Name", "Real Address", "Virtual Address", "Virtual IPv6 Address",
    "Bytes Received", "Bytes Sent", "Connected Since", "Connected Since (time_t)",
    "Username", "Client ID", "Peer ID", "Data Channel Cipher",
)  # fmt: skip
BAD_SOURCE_STAT = "Bad source address drops"
_ROUTE_HEADER = ("Virtual Address", "Common Name", "Real Address", "Last Ref", "Last Ref (time_t)")


class StatusError(Exception):
    """A status version we do not have, or a file we cannot write: one line."""


@dataclass
class ClientSnapshot:
    """One connected client, as the server knows it at one moment."""

    common_name: str
    real_address: tuple[str, int]
    peer_id: int
    connected_since: float  # unix time
    vpn_ipv4: str | None = None
    vpn_ipv6: str | None = None
    iroutes: tuple[str, ...] = ()  # networks behind the client, prefix form
    bytes_received: int = 0  # link bytes from the client (data + control)
    bytes_sent: int = 0
    packets_received: int = 0  # data packets (metrics only)
    packets_sent: int = 0
    username: str | None = None
    client_id: int = 0  # management client id (openvpn's cid)
    cipher: str = ""
    last_ref: float | None = None  # unix time of the last packet from the client
    drops: dict[str, int] = field(default_factory=dict)  # data-plane drops by reason (metrics)


@dataclass
class StatusSnapshot:
    """Everything a status report shows."""

    clients: list[ClientSnapshot] = field(default_factory=list)
    now: float = field(default_factory=time.time)
    # The data channel is offloaded as with DCO: on the XDP path, AF_XDP bound. The socket
    # path's worker is a userspace loop like openvpn's own, so it reports 0.
    dco: bool = False
    # Packets clients sent from addresses not theirs, dropped since start (GLOBAL STATS).
    bad_source_drops: int = 0
    engine: str = ""  # the data plane's per-packet engine: "native" or "python"


def time_string(t: float) -> str:
    """openvpn's time_string(): local time, `YYYY-MM-DD HH:MM:SS`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(t)))


def real_address(addr: tuple[str, int]) -> str:
    """openvpn's mroute_addr_print of a peer: IPv4 with its port, IPv6 without."""
    host, port = addr[0], addr[1]
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return f"{host}:{port}"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return f"{ip}:{port}" if ip.version == 4 else str(ip)


def _routes(c: ClientSnapshot) -> list[str]:
    out = [a for a in (c.vpn_ipv4, c.vpn_ipv6) if a]
    # iroutes always print with their prefix length, /32 too (multi_learn_in_addr_t).
    out += [str(ipaddress.ip_network(net, strict=False)) for net in c.iroutes]
    return out


def render(snapshot: StatusSnapshot, version: int) -> list[str]:
    """The status report's lines (no line ends) for status-version 1, 2 or 3."""
    if version == 1:
        return _render_v1(snapshot)
    if version in (2, 3):
        return _render_v23(snapshot, "\t" if version == 3 else ",")
    raise StatusError(f"status version must be 1, 2 or 3, not {version}")


def _render_v1(s: StatusSnapshot) -> list[str]:
    lines = [
        "OpenVPN CLIENT LIST",
        f"Updated,{time_string(s.now)}",
        "Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since",
    ]
    for c in s.clients:
        lines.append(
            f"{c.common_name},{real_address(c.real_address)},{c.bytes_received},"
            f"{c.bytes_sent},{time_string(c.connected_since)}"
        )
    lines += ["ROUTING TABLE", "Virtual Address,Common Name,Real Address,Last Ref"]
    for c in s.clients:
        last = time_string(c.last_ref or c.connected_since)
        for route in _routes(c):
            lines.append(f"{route},{c.common_name},{real_address(c.real_address)},{last}")
    lines += ["GLOBAL STATS", "Max bcast/mcast queue length,0", *_bad_sources(s, ","), "END"]
    return lines


def _bad_sources(s: StatusSnapshot, sep: str, tag: tuple[str, ...] = ()) -> list[str]:
    """Our one GLOBAL STATS line of our own, there once there is something to count (so a
    clean server's report stays openvpn's text; its parsers skip unknown global stats)."""
    if not s.bad_source_drops:
        return []
    return [sep.join((*tag, BAD_SOURCE_STAT, str(s.bad_source_drops)))]


def _render_v23(s: StatusSnapshot, sep: str) -> list[str]:
    def row(*fields: object) -> str:
        return sep.join(str(f) for f in fields)

    lines = [
        row("TITLE", title(s.dco, s.engine)),
        row("TIME", time_string(s.now), int(s.now)),
        row("HEADER", "CLIENT_LIST", *_CLIENT_HEADER),
    ]
    for c in s.clients:
        lines.append(row(
            "CLIENT_LIST", c.common_name, real_address(c.real_address), c.vpn_ipv4 or "",
            c.vpn_ipv6 or "", c.bytes_received, c.bytes_sent, time_string(c.connected_since),
            int(c.connected_since), c.username or UNDEF, c.client_id, c.peer_id, c.cipher,
        ))  # fmt: skip
    lines.append(row("HEADER", "ROUTING_TABLE", *_ROUTE_HEADER))
    for c in s.clients:
        last = c.last_ref or c.connected_since
        for route in _routes(c):
            lines.append(row(
                "ROUTING_TABLE", route, c.common_name, real_address(c.real_address),
                time_string(last), int(last),
            ))  # fmt: skip
    lines += [
        row("GLOBAL_STATS", "Max bcast/mcast queue length", 0),
        row("GLOBAL_STATS", "dco_enabled", int(s.dco)),
        *_bad_sources(s, sep, ("GLOBAL_STATS",)),
        "END",
    ]
    return lines


def render_text(snapshot: StatusSnapshot, version: int) -> str:
    """The status file's content: the lines, each ending in a newline (as openvpn writes)."""
    return "".join(line + "\n" for line in render(snapshot, version))


class StatusFile:
    """`status FILE [N]`: rewrite FILE every N seconds, and once more on `close`.

    Written to a temporary file and renamed over, so a reader never sees half a report.
    Where the directory is not writable (after dropping privileges, say) it falls back to
    rewriting in place through a descriptor opened at start, as openvpn does.
    """

    def __init__(self, path: Path, version: int, interval: float,
                 snapshot: Callable[[], StatusSnapshot]) -> None:
        if version not in (1, 2, 3):
            raise StatusError(f"status-version must be 1, 2 or 3, not {version}")
        self.path = Path(path)
        self.version = version
        self.interval = interval
        self.snapshot = snapshot
        self.log = get_logger()
        self._task: asyncio.Task | None = None
        self._fd: int | None = None
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StatusError(f"cannot open status file {self.path}: {exc.strerror}") from exc

    def write(self) -> None:
        """Write the report now; a failure is logged, never raised (the VPN goes on)."""
        try:
            data = render_text(self.snapshot(), self.version).encode()
        except Exception as exc:  # a bad snapshot must not stop the server
            self.log.warning("status: cannot build the report: %s", exc)
            return
        try:
            self._replace(data)
        except OSError:
            try:
                self._rewrite_in_place(data)
            except OSError as exc:
                self.log.warning("status: cannot write %s: %s", self.path, exc.strerror)

    def _replace(self, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        # The held descriptor now points at the old inode: reopen for the fallback.
        self._reopen()

    def _reopen(self) -> None:
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            if self._fd is not None:
                os.close(self._fd)
            self._fd = fd

    def _rewrite_in_place(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError(9, "status file is closed")
        os.lseek(self._fd, 0, os.SEEK_SET)
        os.write(self._fd, data)
        os.ftruncate(self._fd, len(data))

    def start(self) -> None:
        """Write now and then every `interval` seconds (in the running event loop)."""
        self.write()
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.write()

    def close(self) -> None:
        """Stop the timer, write a last report, release the descriptor."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.write()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
