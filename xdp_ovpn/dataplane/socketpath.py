"""The socket data path: TUN + the UDP socket, in its own worker process.

The reference data path and the fallback when XDP is unavailable. The control plane
opens the UDP socket, then `SocketDataPlane(sock)` forks a worker that:

- reads the UDP socket: its engine (engine.py) decrypts DATA_V2 (replay window, float
  detection, keepalive pings and OCC exit consumed, on a server the inner source address
  checked) and writes it to the TUN; every other datagram goes up to the control plane
  over a socketpair (`control_fd` / `read_control`);
- reads the TUN: the engine picks the peer by destination address (peers.py), the
  primary key encrypts, the UDP socket sends;
- runs keepalive (ping when idle, expire when silent) as DCO does;
- answers the API verbs, which the control-plane handle sends as pickled calls over a
  command socketpair (one call, one reply: verbs are rare, ordering is kept).

The worker exits when the command socket closes, so it never outlives the control plane,
and it ignores SIGINT/SIGTERM so that shutdown stays the control plane's orderly one.
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
from typing import Any

from xdp_ovpn.capabilities import CapabilityError, become
from xdp_ovpn.dataplane.api import (
    Address,
    DataPlaneError,
    KeySlot,
    Notification,
    PeerExpired,
    PeerStats,
    Privileged,
)
from xdp_ovpn.dataplane.engine import ControlDatagram, Engine, EngineConfig, make_engine, resolve
from xdp_ovpn.proto.constants import (
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    OCC_EXIT_PAYLOAD,
    PING_PAYLOAD,
)
from xdp_ovpn.proto.errors import ProtocolError

_BUF = 65536 + 256
_BATCH = 64  # datagrams or TUN packets handled before looking at the other fds
_TICK = 0.25  # keepalive resolution, seconds
_CALL_TIMEOUT = 5.0
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


def _seqpacket_pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


class SocketDataPlane:
    """Control-plane handle of the socket data path (implements api.DataPlane)."""

    name = "socket"
    tun_vnet_hdr = False
    restart_capabilities: frozenset[int] = frozenset()  # its worker is never replaced

    def __init__(
        self,
        sock: socket.socket,
        *,
        single_peer: bool = False,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
        engine: str = "auto",
    ) -> None:
        self.engine = resolve(engine)  # the engine's name, for the log and reports
        config = EngineConfig(single_peer, replay_window, replay_time,
                              check_source=not single_peer)
        self._cmd, worker_cmd = _seqpacket_pair()
        self._ctl, worker_ctl = _seqpacket_pair()
        self._ntf, worker_ntf = _seqpacket_pair()
        self._pid = os.fork()
        if self._pid == 0:  # the worker: never returns
            status = 0
            try:
                for s in (self._cmd, self._ctl, self._ntf):
                    s.close()
                worker = _Worker(sock, worker_cmd, worker_ctl, worker_ntf,
                                 make_engine(self.engine, sock, config))
                worker.run()
            except BaseException:
                status = 1
            finally:
                os._exit(status)
        for s in (worker_cmd, worker_ctl, worker_ntf):
            s.close()
        self._ctl.setblocking(False)
        self._ntf.setblocking(False)
        self._cmd.settimeout(_CALL_TIMEOUT)
        self._closed = False

    @property
    def pid(self) -> int:
        return self._pid

    def _call(self, verb: str, *args: Any, fds: Sequence[int] = (), **kw: Any) -> Any:
        if self._closed:
            raise DataPlaneError("data plane is closed")
        message = pickle.dumps((verb, args, kw))
        try:
            if fds:
                socket.send_fds(self._cmd, [message], list(fds))
            else:
                self._cmd.send(message)
            reply = self._cmd.recv(_BUF)
        except OSError as exc:
            raise DataPlaneError(f"data-plane worker not answering: {exc}") from None
        if not reply:
            raise DataPlaneError("data-plane worker exited")
        ok, value = pickle.loads(reply)
        if not ok:
            raise DataPlaneError(value)
        return value

    def new_peer(self, peer_id: int, remote: Address, vpn_ipv4: str | None = None,
                 vpn_ipv6: str | None = None, iroutes: Sequence[str] = ()) -> None:
        self._call("new_peer", peer_id, tuple(remote[:2]), vpn_ipv4, vpn_ipv6, tuple(iroutes))

    def set_peer(self, peer_id: int, **kw: Any) -> None:
        self._call("set_peer", peer_id, **kw)

    def del_peer(self, peer_id: int, reason: str = "userspace") -> None:
        self._call("del_peer", peer_id, reason)

    def new_key(self, peer_id: int, slot: KeySlot, key_id: int, cipher: str,
                encrypt_key: bytes, encrypt_nonce_tail: bytes,
                decrypt_key: bytes, decrypt_nonce_tail: bytes) -> None:
        self._call("new_key", peer_id, int(slot), key_id, cipher, bytes(encrypt_key),
                   bytes(encrypt_nonce_tail), bytes(decrypt_key), bytes(decrypt_nonce_tail))

    def swap_keys(self, peer_id: int) -> None:
        self._call("swap_keys", peer_id)

    def del_key(self, peer_id: int, slot: KeySlot) -> None:
        self._call("del_key", peer_id, int(slot))

    def get_peer(self, peer_id: int) -> PeerStats:
        return self._call("get_peer", peer_id)

    def peers(self) -> list[int]:
        """Peer-ids the data plane currently holds."""
        return self._call("peers")

    def attach_tun(self, tun_fd: int, mtu: int) -> None:
        self._call("attach_tun", mtu, fds=[tun_fd])

    def drop_privileges(self, uid: int, gid: int, privileged: Privileged) -> None:
        self._call("drop_privileges", uid, gid)

    def send_exit(self, peer_id: int) -> None:
        """Send an OCC exit on the data channel (for peers without control-channel EXIT)."""
        self._call("send_exit", peer_id)

    def notification_fd(self) -> int:
        return self._ntf.fileno()

    def notifications(self) -> list[Notification]:
        return [pickle.loads(frame) for frame in _drain(self._ntf)]

    def control_fd(self) -> int | None:
        return self._ctl.fileno()

    def read_control(self) -> list[tuple[bytes, Address]]:
        return [unpack_datagram(frame) for frame in _drain(self._ctl)]

    def close(self) -> None:
        """Stop the worker (closing its command socket) and reap it."""
        if self._closed:
            return
        self._closed = True
        for s in (self._cmd, self._ctl, self._ntf):
            s.close()
        for _ in range(100):
            pid, _status = os.waitpid(self._pid, os.WNOHANG)
            if pid:
                return
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        os.waitpid(self._pid, 0)


def _drain(sock: socket.socket) -> list[bytes]:
    frames = []
    while True:
        try:
            frame = sock.recv(_BUF)
        except (BlockingIOError, InterruptedError):
            return frames
        except OSError:
            return frames
        if not frame:
            return frames
        frames.append(frame)


class _Worker:
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
        self.reads_tun = True  # False: another worker reads the TUN, this one only writes
        self.sel = selectors.DefaultSelector()
        self.sel.register(sock, selectors.EVENT_READ, self._on_udp)
        self.sel.register(cmd, selectors.EVENT_READ, self._on_command)

    def run(self) -> None:
        next_tick = time.monotonic() + _TICK
        while self.running:
            timeout = max(0.0, next_tick - time.monotonic())
            for key, _ in self.sel.select(timeout):
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

    def _on_udp(self) -> None:
        self.engine.rx_socket(_BATCH, time.monotonic())
        self._events()

    def _on_tun(self) -> None:
        self.engine.tx(_BATCH, time.monotonic())
        self._events()

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
            message, fds, _flags, _addr = socket.recv_fds(self.cmd, _BUF, 4)
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
            if self.reads_tun:
                self.sel.unregister(self.tun_fd)
            os.close(self.tun_fd)
        os.set_blocking(fd, False)
        self.tun_fd = fd
        if self.reads_tun:
            self.sel.register(fd, selectors.EVENT_READ, self._on_tun)
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
                    en: bytes, dk: bytes, dn: bytes) -> None:
        self.engine.new_key(peer_id, slot, key_id, cipher, ek, en, dk, dn)

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
