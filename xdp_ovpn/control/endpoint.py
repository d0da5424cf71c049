"""The UDP endpoint: one socket, one port, shared by the control plane and the data plane.

The control plane opens and binds the socket (like openvpn), hands it to the data plane,
and receives control datagrams from the data plane: on both paths its worker reads the
socket and passes up what is not DATA. See dataplane/api.py for the ownership rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from xdp_ovpn.control.log import get_logger, peer_label
from xdp_ovpn.dataplane.api import Address, DataPlane


class EndpointError(Exception):
    """The UDP socket could not be opened or bound: one line for the user."""


def resolve(host: str, port: int, proto: str = "udp") -> tuple[int, Address]:
    """(family, address) of a remote; `proto` udp4/udp6 restricts the family."""
    family = {"udp4": socket.AF_INET, "udp6": socket.AF_INET6}.get(proto, socket.AF_UNSPEC)
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise EndpointError(f"cannot resolve {host}: {exc.strerror}") from None
    fam, _, _, _, addr = infos[0]
    return fam, (addr[0], addr[1])


def open_server_socket(local: str | None, port: int, proto: str = "udp") -> socket.socket:
    """Bind the listening socket: dual-stack `::` unless `local` or udp4/udp6 says otherwise."""
    if local:
        family, _ = resolve(local, port, proto)
    else:
        family = socket.AF_INET if proto == "udp4" else socket.AF_INET6
        local = "0.0.0.0" if family == socket.AF_INET else "::"
    return _bind(family, local, port, v6only=proto == "udp6")


def open_client_socket(family: int, local: str | None = None, lport: int = 0) -> socket.socket:
    """A socket to talk to one remote: ephemeral port unless `lport` (openvpn's nobind)."""
    host = local or ("0.0.0.0" if family == socket.AF_INET else "::")
    return _bind(family, host, lport, v6only=False)


def _bind(family: int, host: str, port: int, v6only: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EndpointError(f"cannot bind UDP {host}:{port}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def set_socket_buffers(sock: socket.socket, sndbuf: int, rcvbuf: int) -> None:
    """`sndbuf` / `rcvbuf` as openvpn sets them: a nonzero size asks the kernel for that
    buffer (which it doubles, capped by net.core.wmem_max/rmem_max); 0 keeps its default."""
    before = _buffers(sock)
    for option, size in ((socket.SO_SNDBUF, sndbuf), (socket.SO_RCVBUF, rcvbuf)):
        if size:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
    if sndbuf or rcvbuf:
        (snd_old, rcv_old), (snd, rcv) = before, _buffers(sock)
        get_logger().info("Socket Buffers: R=[%d->%d] S=[%d->%d]", rcv_old, rcv, snd_old, snd)


def _buffers(sock: socket.socket) -> tuple[int, int]:
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def same_family_address(sock: socket.socket, addr: Address) -> Address:
    """An IPv4 address as IPv4-mapped when the socket is IPv6 (so peers are keyed one way)."""
    if sock.family == socket.AF_INET6 and ":" not in addr[0]:
        return (f"::ffff:{addr[0]}", addr[1])
    return addr


class UdpEndpoint:
    """Receives control datagrams (from the data plane) and sends ours."""

    def __init__(self, sock: socket.socket, dataplane: DataPlane,
                 on_datagram: Callable[[bytes, Address], None]) -> None:
        self.sock = sock
        self.dataplane = dataplane
        self.on_datagram = on_datagram
        self._reader: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = self.dataplane.control_fd()
        loop.add_reader(self._reader, self._read_dataplane)

    def stop(self) -> None:
        if self._loop is not None and self._reader is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._reader)
        self._reader = None

    def sendto(self, data: bytes, addr: Address) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:  # unreachable peer, full buffer: the reliability layer resends
            get_logger().debug("send to %s:%s failed: %s", addr[0], addr[1], exc.strerror)

    def _read_dataplane(self) -> None:
        for data, addr in self.dataplane.read_control():
            self._deliver(data, addr)

    def _deliver(self, data: bytes, addr: Address) -> None:
        if not data:
            return
        try:
            self.on_datagram(data, addr)
        except Exception as exc:  # a bug must cost one packet, never the gateway
            get_logger().info("internal error on a packet from %s: %s: %s",
                              peer_label(None, addr), type(exc).__name__, exc)
