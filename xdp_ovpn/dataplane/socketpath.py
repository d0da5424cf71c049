"""The socket data path: TUN + the UDP socket, in its own worker process.

The reference data path and the fallback when XDP is unavailable. The control plane
opens the UDP socket, then `SocketDataPlane(sock)` forks a worker that:

- reads the UDP socket: DATA_V2 is decrypted here (replay window, float detection,
  keepalive pings and OCC exit consumed, on a server the inner source address checked)
  and written to the TUN; every other datagram goes up to the control plane over a
  socketpair (`control_fd` / `read_control`);
- reads the TUN: the destination address picks the peer (peers.py), the primary key
  encrypts, the UDP socket sends;
- runs keepalive (ping when idle, expire when silent) as DCO does;
- answers the API verbs, which the control-plane handle sends as pickled calls over a
  command socketpair (one call, one reply: verbs are rare, ordering is kept).

The worker exits when the command socket closes, so it never outlives the control plane,
and it ignores SIGINT/SIGTERM so that shutdown stays the control plane's orderly one.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
    KeyNeedsRenewal,
    KeySlot,
    Notification,
    PeerExpired,
    PeerFloated,
    PeerStats,
    Privileged,
)
from xdp_ovpn.dataplane.peers import Peer, PeerTable
from xdp_ovpn.proto.constants import (
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    KEY_ID_MASK,
    OCC_EXIT_PAYLOAD,
    OPCODE_SHIFT,
    PING_PAYLOAD,
    Opcode,
)
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey
from xdp_ovpn.proto.errors import ProtocolError

_BUF = 65536 + 256
_BATCH = 64  # datagrams or TUN packets handled before looking at the other fds
_TICK = 0.25  # keepalive resolution, seconds
_CALL_TIMEOUT = 5.0
_PORT = struct.Struct("!H")
_DATA_V2 = int(Opcode.DATA_V2)
_DATA_V1 = int(Opcode.DATA_V1)


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
    ) -> None:
        self._cmd, worker_cmd = _seqpacket_pair()
        self._ctl, worker_ctl = _seqpacket_pair()
        self._ntf, worker_ntf = _seqpacket_pair()
        self._pid = os.fork()
        if self._pid == 0:  # the worker: never returns
            status = 0
            try:
                for s in (self._cmd, self._ctl, self._ntf):
                    s.close()
                worker = _Worker(sock, worker_cmd, worker_ctl, worker_ntf, single_peer,
                                 replay_window, replay_time)
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
    """The worker process's loop: UDP in, TUN in, commands, keepalive."""

    def __init__(self, sock: socket.socket, cmd: socket.socket, ctl: socket.socket,
                 ntf: socket.socket, single_peer: bool, replay_window: int,
                 replay_time: float) -> None:
        signal.set_wakeup_fd(-1)  # the parent's asyncio self-pipe is not ours
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.sock, self.cmd, self.ctl, self.ntf = sock, cmd, ctl, ntf
        self.sock.setblocking(False)
        self.peers = PeerTable(single=single_peer)
        self.replay_window, self.replay_time = replay_window, replay_time
        self.tun_fd: int | None = None
        self.inbuf = bytearray(_BUF)
        self.outbuf = bytearray(_BUF)
        self.drops: dict[str, int] = {}
        self.renewing: dict[Peer, set[int]] = {}  # key-ids already reported as exhausted
        self.running = True
        self.keep_caps: tuple[int, ...] = ()  # capabilities kept after drop_privileges
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

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _notify(self, event: Notification) -> None:
        with contextlib.suppress(OSError):
            self.ntf.send(pickle.dumps(event))

    # -- link side ------------------------------------------------------------

    def _on_udp(self) -> None:
        view = memoryview(self.inbuf)
        for _ in range(_BATCH):
            try:
                n, addr = self.sock.recvfrom_into(self.inbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._count("socket error")  # e.g. ICMP port unreachable reported late
                continue
            if n == 0:
                continue
            op = self.inbuf[0] >> OPCODE_SHIFT
            if op == _DATA_V2:
                self._on_data(view[:n], (addr[0], addr[1]))
            elif op == _DATA_V1:
                self._count("DATA_V1 unsupported")
            else:
                with contextlib.suppress(OSError):
                    self.ctl.send(pack_datagram(view[:n], (addr[0], addr[1])))

    def _on_data(self, packet: memoryview, addr: Address) -> None:
        if len(packet) < 8:
            self._count("short data packet")
            return
        peer_id = int.from_bytes(packet[1:4], "big")
        peer = self.peers.by_id(peer_id)
        if peer is None and self.peers.single:
            peer = next(iter(self.peers), None)
        if peer is None:
            self._count("unknown peer-id")
            return
        key_id = packet[0] & KEY_ID_MASK
        crypto = _key_for(peer, key_id)
        if crypto is None:
            peer.drop("no key")
            return
        now = time.monotonic()
        try:
            n = crypto.decrypt_into(self.outbuf, packet, now)
        except ProtocolError as exc:
            peer.drop(type(exc).__name__)
            return
        stats = peer.stats
        stats.link_rx_packets += 1
        stats.link_rx_bytes += len(packet)
        peer.last_rx = now
        if addr != peer.remote:
            self.peers.update(peer.peer_id, remote=addr)
            self._notify(PeerFloated(peer.peer_id, addr))
        plain = memoryview(self.outbuf)[:n]
        if n == len(PING_PAYLOAD) and plain == PING_PAYLOAD:
            return
        if n == len(OCC_EXIT_PAYLOAD) and plain == OCC_EXIT_PAYLOAD:
            self.peers.remove(peer.peer_id)
            self._notify(PeerExpired(peer.peer_id, "exit"))
            return
        if not self.peers.owns_source(peer, plain, 0, n):  # counted there
            return
        if self.tun_fd is None:
            peer.drop("no tun")
            return
        try:
            self._tun_write(plain)
        except OSError:
            peer.drop("tun write")
            return
        stats.rx_packets += 1
        stats.rx_bytes += n

    def _tun_write(self, plain: memoryview) -> None:
        """One decrypted packet to the TUN (the XDP path's worker frames it for vnet_hdr)."""
        os.write(self.tun_fd, plain)

    def _send(self, peer: Peer, plaintext: bytes | memoryview, now: float) -> bool:
        crypto = peer.keys[KeySlot.PRIMARY]
        if crypto is None:
            peer.drop("no key")
            return False
        try:
            n = crypto.encrypt_into(self.outbuf, plaintext, now)
        except ProtocolError as exc:
            peer.drop(type(exc).__name__)
            return False
        try:
            self.sock.sendto(memoryview(self.outbuf)[:n], peer.remote)
        except OSError:
            peer.drop("send")
            return False
        peer.last_tx = now
        peer.stats.link_tx_packets += 1
        peer.stats.link_tx_bytes += n
        if crypto.needs_renegotiation and crypto.key_id not in self.renewing.get(peer, ()):
            self.renewing.setdefault(peer, set()).add(crypto.key_id)
            self._notify(KeyNeedsRenewal(peer.peer_id, crypto.key_id))
        return True

    # -- tunnel side ----------------------------------------------------------

    def _on_tun(self) -> None:
        buf = self.inbuf
        view = memoryview(buf)
        for _ in range(_BATCH):
            try:
                n = os.readv(self.tun_fd, (buf,))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._count("tun read")
                return
            version = buf[0] >> 4
            if version == 4 and n >= 20:
                dst = bytes(buf[16:20])
            elif version == 6 and n >= 40:
                dst = bytes(buf[24:40])
            else:
                self._count("not IP")
                continue
            peer = self.peers.by_destination(dst)
            if peer is None:
                self._count("no route to peer")
                continue
            if self._send(peer, view[:n], time.monotonic()):  # inbuf -> outbuf
                peer.stats.tx_packets += 1
                peer.stats.tx_bytes += n

    # -- keepalive ------------------------------------------------------------

    def _keepalive(self, now: float) -> None:
        for peer in self.peers:
            if peer.keepalive_timeout and now - peer.last_rx >= peer.keepalive_timeout:
                self.peers.remove(peer.peer_id)
                self._notify(PeerExpired(peer.peer_id, "expired"))
                continue
            idle = now - peer.last_tx
            if peer.keepalive_interval and idle >= peer.keepalive_interval and peer.keys[0]:
                self._send(peer, PING_PAYLOAD, now)

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

    def attach_tun(self, fd: int, mtu: int) -> None:
        if self.tun_fd is not None:
            self.sel.unregister(self.tun_fd)
            os.close(self.tun_fd)
        os.set_blocking(fd, False)
        self.tun_fd = fd
        self.sel.register(fd, selectors.EVENT_READ, self._on_tun)

    def cmd_new_peer(self, peer_id: int, remote: Address, vpn_ipv4: str | None,
                     vpn_ipv6: str | None, iroutes: tuple[str, ...]) -> None:
        now = time.monotonic()
        peer = Peer(peer_id, remote, vpn_ipv4, vpn_ipv6, iroutes, last_rx=now, last_tx=now)
        self.peers.add(peer)

    def cmd_set_peer(self, peer_id: int, *, remote: Address | None = None,
                     keepalive_interval: float | None = None,
                     keepalive_timeout: float | None = None, vpn_ipv4: str | None = None,
                     vpn_ipv6: str | None = None, iroutes: Sequence[str] | None = None) -> None:
        peer = self.peers.update(peer_id, remote=tuple(remote[:2]) if remote else None,
                                 vpn_ipv4=vpn_ipv4, vpn_ipv6=vpn_ipv6, iroutes=iroutes)
        if keepalive_interval is not None:
            peer.keepalive_interval = keepalive_interval or None
        if keepalive_timeout is not None:
            peer.keepalive_timeout = keepalive_timeout or None
            peer.last_rx = time.monotonic()

    def cmd_del_peer(self, peer_id: int, reason: str) -> None:
        self.renewing.pop(self.peers.remove(peer_id), None)

    def cmd_new_key(self, peer_id: int, slot: int, key_id: int, cipher: str, ek: bytes,
                    en: bytes, dk: bytes, dn: bytes) -> None:
        peer = self.peers.get(peer_id)
        crypto = DataChannelCrypto(
            key_id, peer_id, DataKey(cipher, ek, en), DataKey(cipher, dk, dn),
            replay_window=self.replay_window, replay_time=self.replay_time,
        )
        peer.keys[slot] = crypto
        self._slot_ids(peer)

    def cmd_swap_keys(self, peer_id: int) -> None:
        peer = self.peers.get(peer_id)
        peer.keys.reverse()
        self._slot_ids(peer)

    def cmd_del_key(self, peer_id: int, slot: int) -> None:
        peer = self.peers.get(peer_id)
        peer.keys[slot] = None
        self._slot_ids(peer)

    def cmd_get_peer(self, peer_id: int) -> PeerStats:
        peer = self.peers.get(peer_id)
        stats = dataclasses.replace(peer.stats, drops=dict(peer.stats.drops))
        stats.last_rx, stats.last_tx = peer.last_rx, peer.last_tx
        return stats

    def cmd_peers(self) -> list[int]:
        return [peer.peer_id for peer in self.peers]

    def cmd_drops(self) -> dict[str, int]:
        return dict(self.drops)

    def cmd_send_exit(self, peer_id: int) -> None:
        self._send(self.peers.get(peer_id), OCC_EXIT_PAYLOAD, time.monotonic())

    def cmd_drop_privileges(self, uid: int, gid: int) -> None:
        """Become uid/gid; keep `keep_caps` (none here: socket and TUN are open)."""
        try:
            become(uid, gid, self.keep_caps)
        except (OSError, CapabilityError) as exc:
            raise DataPlaneError(f"worker cannot switch to {uid}:{gid}: {exc}") from None

    @staticmethod
    def _slot_ids(peer: Peer) -> None:
        ids = [getattr(c, "key_id", None) for c in peer.keys]
        peer.stats.primary_key_id, peer.stats.secondary_key_id = ids


def _key_for(peer: Peer, key_id: int) -> Any:
    for crypto in peer.keys:
        if crypto is not None and crypto.key_id == key_id:
            return crypto
    return None

