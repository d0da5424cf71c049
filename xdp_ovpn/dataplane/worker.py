"""The data-plane worker's loop, shared by both data paths, and the channels to its handle.

A worker is a forked process that owns the packets: its engine (engine.py) waits on the
UDP socket and the TUN and handles each batch (`serve`) until the worker has work of its
own; the worker runs keepalive, and answers the verbs the
control-plane handle (handle.py) sends as pickled calls on the command socketpair (one
call, one reply). Control datagrams go up on a second socketpair (`pack_datagram`),
notifications on a third. The worker exits when the command socket closes, so it never
outlives the control plane, and it ignores SIGINT/SIGTERM so that shutdown stays the
control plane's orderly one. The XDP path's worker (xdppath.py) is this one with AF_XDP
sockets and the BPF mirror added.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import socket
import struct
import time
from collections.abc import Sequence

from xdp_ovpn.capabilities import CapabilityError, become
from xdp_ovpn.dataplane.api import Address, DataPlaneError, Notification, PeerExpired, PeerStats
from xdp_ovpn.dataplane.engine import ControlDatagram, Engine
from xdp_ovpn.proto.constants import OCC_EXIT_PAYLOAD, PING_PAYLOAD
from xdp_ovpn.proto.errors import ProtocolError

BUF = 65536 + 256  # the largest frame on any of the socketpairs
_TICK = 0.25  # keepalive resolution, seconds
_PORT = struct.Struct("!H")


def pack_datagram(data: bytes | memoryview, addr: Address) -> bytes:
    """Frame a control datagram and its source address for the socketpair."""
    host = addr[0].encode()
    return bytes([len(host)]) + host + _PORT.pack(addr[1]) + bytes(data)


def unpack_datagram(frame: bytes) -> tuple[bytes, Address]:
    n = frame[0]
    host = frame[1 : 1 + n].decode()
    (port,) = _PORT.unpack_from(frame, 1 + n)
    return frame[3 + n :], (host, port)


def seqpacket_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def drain(sock: socket.socket) -> list[bytes]:
    """Every frame waiting on a non-blocking socketpair end."""
    frames = []
    while True:
        try:
            frame = sock.recv(BUF)
        except (BlockingIOError, InterruptedError):
            return frames
        except OSError:
            return frames
        if not frame:
            return frames
        frames.append(frame)


class Worker:
    """The worker process's loop: UDP in, TUN in, commands, keepalive; packets go to the
    engine (engine.py), everything else stays here."""

    def __init__(self, sock: socket.socket, cmd: socket.socket, ctl: socket.socket,
                 ntf: socket.socket, engine: Engine) -> None:
        signal.set_wakeup_fd(-1)  # the parent's asyncio self-pipe is not ours
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.sock, self.cmd, self.ctl, self.ntf = sock, cmd, ctl, ntf
        self.engine = engine
        self.tun_fd: int | None = None
        self.drops: dict[str, int] = {}
        # peer-id -> (keepalive interval, timeout, when the timeout started counting)
        self.keepalive: dict[int, tuple[float | None, float | None, float]] = {}
        self.running = True
        self.keep_caps: tuple[int, ...] = ()  # capabilities kept after drop_privileges
        # False: another worker reads it (the socket; the TUN: this one only writes)
        self.reads_socket = self.reads_tun = True
        # The worker's own fds (verbs); the engine polls the packets' fds itself.
        self.sel = selectors.DefaultSelector()
        self.sel.register(cmd, selectors.EVENT_READ, self._on_command)

    def run(self) -> None:
        next_tick = time.monotonic() + _TICK
        while self.running:
            self.engine.serve(tuple(self.sel.get_map()), max(0.0, next_tick - time.monotonic()),
                              self.reads_socket, self.reads_tun and self.tun_fd is not None)
            self._events()
            for key, _ in self.sel.select(0):
                key.data()
            now = time.monotonic()
            if now >= next_tick:
                self._keepalive(now)
                next_tick = now + _TICK

    def _notify(self, event: Notification) -> None:
        with contextlib.suppress(OSError):
            self.ntf.send(pickle.dumps(event))

    def _events(self) -> None:
        """Pass on what the engine saw: control datagrams up, the rest as notifications."""
        for event in self.engine.events():
            if isinstance(event, ControlDatagram):
                with contextlib.suppress(OSError):
                    self.ctl.send(pack_datagram(event.data, event.source))
                continue
            if isinstance(event, PeerExpired):
                self._gone(event.peer_id)
            self._notify(event)

    def _gone(self, peer_id: int) -> None:
        """A peer the engine no longer holds (OCC exit, expiry)."""
        self.keepalive.pop(peer_id, None)

    # -- keepalive ------------------------------------------------------------

    def _keepalive(self, now: float) -> None:
        for peer_id, last_rx, last_tx in self.engine.activity():
            interval, timeout, since = self.keepalive.get(peer_id, (None, None, 0.0))
            if timeout and now - max(last_rx, since) >= timeout:
                self.engine.remove_peer(peer_id)
                self._gone(peer_id)
                self._notify(PeerExpired(peer_id, "expired"))
                continue
            if (interval and now - last_tx >= interval
                    and self.engine.key_ids(peer_id)[0] is not None):
                self.engine.send(peer_id, PING_PAYLOAD, now)
        self._events()

    # -- commands -------------------------------------------------------------

    def _on_command(self) -> None:
        try:
            message, fds, _flags, _addr = socket.recv_fds(self.cmd, BUF, 4)
        except OSError:
            message, fds = b"", []
        if not message:
            self.running = False
            return
        verb, args, kw = pickle.loads(message)
        try:
            if verb == "attach_tun":
                result = self.attach_tun(fds[0], *args)
            else:
                result = getattr(self, "cmd_" + verb)(*args, **kw)
            reply = (True, result)
        except DataPlaneError as exc:
            reply = (False, str(exc))
        except (ProtocolError, ValueError, TypeError, KeyError, IndexError) as exc:
            reply = (False, f"{verb}: {exc}")
        self.cmd.send(pickle.dumps(reply))
        self._events()

    def attach_tun(self, fd: int, mtu: int) -> None:
        if self.tun_fd is not None:
            os.close(self.tun_fd)
        os.set_blocking(fd, False)
        self.tun_fd = fd
        self.engine.set_tun(fd, self.tun_vnet_hdr(fd))

    def tun_vnet_hdr(self, fd: int) -> bool:
        """Whether the TUN's reads and writes carry a virtio_net_hdr (not on this path)."""
        return False

    def cmd_new_peer(self, peer_id: int, remote: Address, vpn_ipv4: str | None,
                     vpn_ipv6: str | None, iroutes: tuple[str, ...]) -> None:
        self.engine.add_peer(peer_id, remote, vpn_ipv4, vpn_ipv6, iroutes, time.monotonic())

    def cmd_set_peer(self, peer_id: int, *, remote: Address | None = None,
                     keepalive_interval: float | None = None,
                     keepalive_timeout: float | None = None, vpn_ipv4: str | None = None,
                     vpn_ipv6: str | None = None, iroutes: Sequence[str] | None = None) -> None:
        self.engine.update_peer(peer_id, remote=tuple(remote[:2]) if remote else None,
                                vpn_ipv4=vpn_ipv4, vpn_ipv6=vpn_ipv6, iroutes=iroutes)
        interval, timeout, since = self.keepalive.get(peer_id, (None, None, 0.0))
        if keepalive_interval is not None:
            interval = keepalive_interval or None
        if keepalive_timeout is not None:
            timeout, since = keepalive_timeout or None, time.monotonic()
        self.keepalive[peer_id] = (interval, timeout, since)

    def cmd_del_peer(self, peer_id: int, reason: str) -> None:
        self.engine.remove_peer(peer_id)
        self._gone(peer_id)

    def cmd_new_key(self, peer_id: int, slot: int, key_id: int, cipher: str, ek: bytes,
                    en: bytes, dk: bytes, dn: bytes, epoch: bool = False) -> None:
        self.engine.new_key(peer_id, slot, key_id, cipher, ek, en, dk, dn, epoch=epoch)

    def cmd_swap_keys(self, peer_id: int) -> None:
        self.engine.swap_keys(peer_id)

    def cmd_del_key(self, peer_id: int, slot: int) -> None:
        self.engine.del_key(peer_id, slot)

    def cmd_get_peer(self, peer_id: int) -> PeerStats:
        return self.engine.peer_stats(peer_id)

    def cmd_peers(self) -> list[int]:
        return self.engine.peer_ids()

    def cmd_drops(self) -> dict[str, int]:
        drops = dict(self.drops)
        for reason, count in self.engine.drops().items():
            drops[reason] = drops.get(reason, 0) + count
        return drops

    def cmd_send_exit(self, peer_id: int) -> None:
        self.engine.send(peer_id, OCC_EXIT_PAYLOAD, time.monotonic())

    def cmd_drop_privileges(self, uid: int, gid: int) -> None:
        """Become uid/gid; keep `keep_caps` (none here: socket and TUN are open)."""
        try:
            become(uid, gid, self.keep_caps)
        except (OSError, CapabilityError) as exc:
            raise DataPlaneError(f"worker cannot switch to {uid}:{gid}: {exc}") from None
