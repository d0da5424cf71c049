"""A layer-3 TUN device: the data plane's side of the kernel stack.

Opened with IFF_TUN | IFF_NO_PI, so every read and write is one bare IP packet
(or, with ``vnet_hdr``, a virtio_net_hdr followed by a possibly GSO-sized IP
packet). The device is not persistent: it lives as long as an fd is open, and
`close` also deletes it through netlink in case another process still holds a
queue, so its addresses and routes go with it.

Configuration (MTU, addresses, routes, link up) goes through pyroute2 in the
network namespace the device was created in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import socket
import struct
import time

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

# linux/if_tun.h
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
_USO = TUN_F_USO4 | TUN_F_USO6
# What the data plane asks for with vnet_hdr: checksum offload plus TCP and UDP segmentation.
OFFLOAD_GSO = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_USO4 | TUN_F_USO6

VNET_HDR_LEN = 10  # struct virtio_net_hdr (no num_buffers: we never set mergeable rx buffers)
IFNAMSIZ = 16
_IFREQ = struct.Struct("16sH22x")  # ifr_name, ifr_flags, padding to sizeof(struct ifreq) == 40


class TunError(Exception):
    """A TUN device could not be opened, configured or used; the message is one line."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, NetlinkError):
        return f"{os.strerror(exc.code)} (netlink)" if exc.code else str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


class Tun:
    """One TUN interface with one or more queue fds (non-blocking).

    >>> tun = Tun(mtu=1420)          # kernel picks tunN
    >>> tun.add_address("10.8.0.1/24"); tun.up()
    >>> n = tun.read_into(buf)       # 0 when nothing is pending
    """

    def __init__(
        self,
        name: str = "tun%d",
        *,
        mtu: int | None = None,
        multi_queue: bool = False,
        vnet_hdr: bool = False,
        offload: int = OFFLOAD_GSO,
    ) -> None:
        if len(name.encode()) >= IFNAMSIZ:
            raise TunError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} bytes")
        self.multi_queue = multi_queue
        self.vnet_hdr = vnet_hdr
        self.offload = offload if vnet_hdr else 0
        self._fds: list[int] = []
        self._ipr: IPRoute | None = None
        self.name = name
        self._fd = self._open_queue(name)
        self.name = self._attached_name
        try:
            self._ipr = IPRoute()
            found = self._ipr.link_lookup(ifname=self.name)
            if not found:
                raise TunError(f"{self.name} vanished right after it was created")
            self.ifindex: int = found[0]
            if mtu is not None:
                self.set_mtu(mtu)
        except BaseException:
            self.close()
            raise

    # -- queues ---------------------------------------------------------------

    def _open_queue(self, name: str) -> int:
        flags = IFF_TUN | IFF_NO_PI
        if self.multi_queue:
            flags |= IFF_MULTI_QUEUE
        if self.vnet_hdr:
            flags |= IFF_VNET_HDR
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise TunError(f"cannot open /dev/net/tun: {_reason(exc)}") from None
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name.encode(), flags))
            if self.vnet_hdr:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
                # Always set, even to 0: a re-attached queue keeps stale offloads otherwise.
                try:
                    fcntl.ioctl(fd, TUNSETOFFLOAD, self.offload)
                except OSError as exc:
                    # Kernels before 6.2 know no UDP segmentation offload (USO): without it.
                    if exc.errno != errno.EINVAL or not self.offload & _USO:
                        raise
                    self.offload &= ~_USO
                    fcntl.ioctl(fd, TUNSETOFFLOAD, self.offload)
        except OSError as exc:
            os.close(fd)
            raise TunError(f"cannot create TUN {name}: {_reason(exc)}") from None
        self._attached_name = _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()
        self._fds.append(fd)
        return fd

    def add_queue(self) -> int:
        """Attach one more queue (needs multi_queue=True); return its non-blocking fd."""
        if not self.multi_queue:
            raise TunError(f"{self.name} was not opened with multi_queue")
        self._check_open()
        return self._open_queue(self.name)

    @property
    def queues(self) -> list[int]:
        """Every queue fd, the first one being `fileno()`."""
        return list(self._fds)

    def fileno(self) -> int:
        return self._fd

    # -- packets --------------------------------------------------------------

    def read_into(self, buf: bytearray | memoryview) -> int:
        """Read one packet into buf; return its length, or 0 when none is pending."""
        try:
            return os.readv(self._fd, (buf,))
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise TunError(f"read from {self.name}: {_reason(exc)}") from None

    def write(self, buf: bytes | bytearray | memoryview) -> int:
        """Hand one IP packet to the kernel stack; return bytes written (0 if it would block)."""
        try:
            return os.write(self._fd, buf)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise TunError(f"write to {self.name}: {_reason(exc)}") from None

    # -- configuration --------------------------------------------------------

    def _netlink(self, what: str, call, *args, **kw):
        self._check_open()
        try:
            return call(*args, **kw)
        except NetlinkError as exc:
            raise TunError(f"{what} on {self.name}: {_reason(exc)}") from None

    def set_mtu(self, mtu: int) -> None:
        if not 68 <= mtu <= 65535:
            raise TunError(f"MTU {mtu} out of range 68..65535")
        self._netlink(f"set MTU {mtu}", self._ipr.link, "set", index=self.ifindex, mtu=mtu)

    def up(self, timeout: float = 2.0) -> None:
        """Bring the link up; return once its IPv6 addresses accept packets."""
        self._netlink("set up", self._ipr.link, "set", index=self.ifindex, state="up")
        self._wait_ipv6_local(timeout)

    def _wait_ipv6_local(self, timeout: float) -> None:
        # The kernel installs an IPv6 address's local route from a workqueue, even with
        # NODAD: until then packets to it are dropped (Ip6InAddrErrors).
        deadline = time.monotonic() + timeout
        while True:
            addrs = self._ipr.get_addr(family=socket.AF_INET6, index=self.ifindex)
            wanted = {a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS") for a in addrs}
            local = self._ipr.get_routes(family=socket.AF_INET6, table=255, oif=self.ifindex)
            if wanted <= {r.get_attr("RTA_DST") for r in local}:
                return
            if time.monotonic() > deadline:
                raise TunError(f"IPv6 addresses on {self.name} not ready after {timeout} s")
            time.sleep(0.005)

    def add_address(self, cidr: str, peer: str | None = None) -> None:
        """Add an IPv4 or IPv6 address with prefix, e.g. "10.8.0.1/24" or "fd00::1/64"."""
        iface = _interface(cidr)
        kw: dict = {"address": str(iface.ip), "prefixlen": iface.network.prefixlen}
        if peer is not None:
            kw["address"] = str(_address(peer))
            kw["local"] = str(iface.ip)
        if iface.version == 6:
            kw["flags"] = IFA_F_NODAD  # a point-to-point tunnel has nobody to collide with
        self._netlink(f"add address {cidr}", self._ipr.addr, "add", index=self.ifindex, **kw)
        if iface.version == 6 and self._is_up():
            self._wait_ipv6_local(2.0)

    def _is_up(self) -> bool:
        link = self._ipr.get_links(self.ifindex)[0]
        return bool(link["flags"] & 1)  # IFF_UP

    def add_route(self, dst: str, via: str | None = None, metric: int | None = None) -> None:
        """Route dst (CIDR, "default" or "::/0") through this device, optionally via a gateway."""
        net = _network(dst)
        kw: dict = {"dst": str(net), "oif": self.ifindex, "family": _family(net.version)}
        if via is not None:
            kw["gateway"] = str(_address(via))
        if metric is not None:
            kw["priority"] = metric
        self._netlink(f"add route {dst}", self._ipr.route, "replace", **kw)

    def del_route(self, dst: str) -> None:
        net = _network(dst)
        kw = {"dst": str(net), "oif": self.ifindex, "family": _family(net.version)}
        self._netlink(f"delete route {dst}", self._ipr.route, "del", **kw)

    # -- lifetime -------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._fds:
            raise TunError(f"TUN {self.name} is closed")

    @property
    def closed(self) -> bool:
        return not self._fds

    def close(self) -> None:
        """Close every queue and delete the device (its addresses and routes go with it)."""
        fds, self._fds = self._fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._ipr is not None:
            # A forked child may still hold a queue fd: delete by netlink so the device goes now.
            with contextlib.suppress(NetlinkError, OSError):
                if self._ipr.link_lookup(ifname=self.name) == [self.ifindex]:
                    self._ipr.link("del", index=self.ifindex)
            self._ipr.close()
            self._ipr = None

    def __enter__(self) -> Tun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fds={self._fds}"
        return f"<Tun {self.name} {state}>"


def _family(version: int) -> int:
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def _interface(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(cidr)
    except ValueError:
        raise TunError(f"bad address {cidr!r}: want address/prefix") from None


def _network(dst: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if dst == "default":
        dst = "0.0.0.0/0"
    try:
        return ipaddress.ip_network(dst, strict=False)
    except ValueError:
        raise TunError(f"bad route destination {dst!r}") from None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise TunError(f"bad address {text!r}") from None


__all__ = [
    "OFFLOAD_GSO",
    "VNET_HDR_LEN",
    "Tun",
    "TunError",
]
