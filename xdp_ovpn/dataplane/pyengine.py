"""The Python engine: the reference implementation of the engine seam (engine.py).

Readable first: it is the executable specification the native engine is held to. The
AF_XDP loops are io.py's `Ingress` (one per AF_XDP socket) and `Egress` (UDP_SEGMENT runs,
with `config.gso`); the socket loops below read the UDP socket a datagram at a time and,
without `config.gso`, send a datagram per TUN packet.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
from collections.abc import Sequence
from typing import Any

from xdp_ovpn.dataplane.api import (
    Address,
    DataPlaneError,
    KeyNeedsRenewal,
    PeerExpired,
    PeerFloated,
    PeerStats,
)
from xdp_ovpn.dataplane.engine import ControlDatagram, EngineConfig, EngineEvent, poll_and_handle
from xdp_ovpn.dataplane.io import Egress, Ingress
from xdp_ovpn.dataplane.ledger import LedgerSender, track_epochs
from xdp_ovpn.dataplane.mss import SYN_MAX_LEN, clamp_mss
from xdp_ovpn.dataplane.offload import VNET_HDR_LEN
from xdp_ovpn.dataplane.peers import Peer, PeerTable
from xdp_ovpn.proto.constants import (
    KEY_ID_MASK,
    OCC_EXIT_PAYLOAD,
    OPCODE_SHIFT,
    PING_PAYLOAD,
    Opcode,
)
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey
from xdp_ovpn.proto.epoch import EpochDataChannel
from xdp_ovpn.proto.epochkeys import EpochKey
from xdp_ovpn.proto.errors import ProtocolError, drop_reason

BUF_SIZE = 65536 + 256
_DATA_V2 = int(Opcode.DATA_V2)
_DATA_V1 = int(Opcode.DATA_V1)
_ZERO_VNET_HDR = bytes(VNET_HDR_LEN)


class PythonEngine:
    """The per-packet loops in Python (implements engine.Engine)."""

    name = "python"
    epoch_format = True

    def __init__(self, sock: socket.socket, config: EngineConfig) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.config = config
        self.peers = PeerTable(single=config.single_peer, check_source=config.check_source)
        self._events: list[EngineEvent] = []
        self._drops: dict[str, int] = {}
        self._ingress: list[Ingress] = []
        self._xsk_fds: list[int] = []
        self._egress: Egress | None = None
        self._tun_fd: int | None = None
        self._vnet_hdr = False
        self._inbuf = bytearray(BUF_SIZE)
        self._outbuf = bytearray(BUF_SIZE)
        # (peer-id, key-id) already reported as KeyNeedsRenewal: once each, whichever loop
        # sends (the GSO loop shares this set).
        self._renewing: set[tuple[int, int]] = set()
        self._mapped_v4 = sock.family == socket.AF_INET6

    # -- peers and keys -----------------------------------------------------------------

    def add_peer(self, peer_id: int, remote: Address, vpn_ipv4: str | None,
                 vpn_ipv6: str | None, iroutes: Sequence[str], now: float) -> None:
        self.peers.add(Peer(peer_id, (remote[0], remote[1]), vpn_ipv4, vpn_ipv6,
                            tuple(iroutes), last_rx=now, last_tx=now))

    def update_peer(self, peer_id: int, *, remote: Address | None = None,
                    vpn_ipv4: str | None = None, vpn_ipv6: str | None = None,
                    iroutes: Sequence[str] | None = None) -> None:
        self.peers.update(peer_id, remote=(remote[0], remote[1]) if remote else None,
                          vpn_ipv4=vpn_ipv4, vpn_ipv6=vpn_ipv6, iroutes=iroutes)
        self._forget(peer_id)

    def remove_peer(self, peer_id: int) -> None:
        self.peers.remove(peer_id)
        self._renewing -= {ids for ids in self._renewing if ids[0] == peer_id}
        self._forget(peer_id)

    def peer_ids(self) -> list[int]:
        return [peer.peer_id for peer in self.peers]

    def new_key(self, peer_id: int, slot: int, key_id: int, cipher: str,
                encrypt_key: bytes, encrypt_nonce_tail: bytes, decrypt_key: bytes,
                decrypt_nonce_tail: bytes, ledger: memoryview | None = None,
                ledger_index: int = 0, shared: memoryview | None = None,
                epoch: bool = False) -> None:
        if shared is not None:  # its windows are in-process: it runs as one worker only
            raise DataPlaneError("the python engine keeps no key state shared by workers")
        peer = self.peers.get(peer_id)
        window = {"replay_window": self.config.replay_window,
                  "replay_time": self.config.replay_time}
        crypto: DataChannelCrypto | EpochDataChannel
        if epoch:  # the keys are the E_1 secrets of the two chains
            try:
                crypto = EpochDataChannel(key_id, peer_id, cipher, EpochKey(1, encrypt_key),
                                          EpochKey(1, decrypt_key), **window)
                if ledger is not None:
                    track_epochs(crypto, ledger, ledger_index)
            except (ProtocolError, ValueError) as exc:
                raise DataPlaneError(f"peer {peer_id}: {exc}") from None
        else:
            crypto = DataChannelCrypto(
                key_id, peer_id, DataKey(cipher, encrypt_key, encrypt_nonce_tail),
                DataKey(cipher, decrypt_key, decrypt_nonce_tail), **window,
            )
            if ledger is not None:
                crypto.sender = LedgerSender(ledger, ledger_index)
        peer.keys[slot] = crypto
        self._slot_ids(peer)

    def swap_keys(self, peer_id: int) -> None:
        peer = self.peers.get(peer_id)
        peer.keys.reverse()
        self._slot_ids(peer)

    def del_key(self, peer_id: int, slot: int) -> None:
        peer = self.peers.get(peer_id)
        peer.keys[slot] = None
        self._slot_ids(peer)

    def key_ids(self, peer_id: int) -> tuple[int | None, int | None]:
        peer = self.peers.get(peer_id)
        return peer.stats.primary_key_id, peer.stats.secondary_key_id

    @staticmethod
    def _slot_ids(peer: Peer) -> None:
        ids = [getattr(c, "key_id", None) for c in peer.keys]
        peer.stats.primary_key_id, peer.stats.secondary_key_id = ids

    def _forget(self, peer_id: int) -> None:
        for ingress in self._ingress:
            ingress.forget_peer(peer_id)

    # -- I/O ----------------------------------------------------------------------------

    def serve(self, wake: tuple[int, ...], timeout: float, read_socket: bool,
              read_tun: bool) -> None:
        poll_and_handle(self, self._xsk_fds, self.sock.fileno(), self._tun_fd, wake, timeout,
                        read_socket, read_tun, lambda: bool(self._events))

    def add_xsk(self, xsk: Any) -> int:
        ingress = Ingress(xsk, -1, self.peers, self._events.append,
                          on_control=self._hand_up, mapped_v4=self._mapped_v4,
                          mss=self.config.mss, mss_epoch=self.config.mss_epoch)
        if self._tun_fd is not None:
            ingress.set_tun(self._tun_fd, self._vnet_hdr)
        self._ingress.append(ingress)
        self._xsk_fds.append(xsk.fileno())
        return len(self._ingress) - 1

    def set_tun(self, fd: int, vnet_hdr: bool) -> None:
        self._tun_fd, self._vnet_hdr = fd, vnet_hdr
        for ingress in self._ingress:
            ingress.set_tun(fd, vnet_hdr)
        if self.config.gso:
            self._egress = Egress(fd, self.sock, self.peers, self._events.append,
                                  mss=self.config.mss, mss_epoch=self.config.mss_epoch,
                                  vnet_hdr=vnet_hdr)
            self._egress.renewing = self._renewing

    def rx_xsk(self, index: int, budget: int, now: float) -> int:
        ingress = self._ingress[index]
        ingress.clock = lambda: now
        return ingress.poll(budget)

    def tx(self, budget: int, now: float) -> int:
        if self._tun_fd is None:
            return 0
        if self._egress is not None:
            self._egress.batch = budget
            self._egress.clock = lambda: now
            return self._egress.poll()
        return self._tx_datagrams(budget, now)

    def send(self, peer_id: int, payload: bytes, now: float) -> bool:
        return self._send(self.peers.get(peer_id), payload, now)

    # -- the socket: control datagrams up, DATA_V2 the classifier passed -------------------

    def rx_socket(self, budget: int, now: float) -> int:
        view = memoryview(self._inbuf)
        handled = 0
        while handled < budget:
            try:
                n, addr = self.sock.recvfrom_into(self._inbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._count("socket error")  # e.g. ICMP port unreachable reported late
                handled += 1
                continue
            handled += 1
            if n == 0:
                continue
            op = self._inbuf[0] >> OPCODE_SHIFT
            if op == _DATA_V2:
                self._on_data(view[:n], (addr[0], addr[1]), now)
            elif op == _DATA_V1:
                self._count("DATA_V1 unsupported")
            else:
                self._hand_up(bytes(view[:n]), (addr[0], addr[1]))
        return handled

    def _on_data(self, packet: memoryview, addr: Address, now: float) -> None:
        if len(packet) < 8:
            self._count("short data packet")
            return
        peer = self.peers.by_id(int.from_bytes(packet[1:4], "big"))
        if peer is None and self.peers.single:
            peer = next(iter(self.peers), None)
        if peer is None:
            self._count("unknown peer-id")
            return
        crypto = _key_for(peer, packet[0] & KEY_ID_MASK)
        if crypto is None:
            peer.drop("no key")
            return
        try:
            n = crypto.decrypt_into(self._outbuf, packet, now)
        except ProtocolError as exc:
            peer.drop(drop_reason(exc))
            return
        stats = peer.stats
        stats.link_rx_packets += 1
        stats.link_rx_bytes += len(packet)
        peer.last_rx = now
        if addr != peer.remote:
            self.peers.update(peer.peer_id, remote=addr)
            self._forget(peer.peer_id)
            self._events.append(PeerFloated(peer.peer_id, addr))
        plain = memoryview(self._outbuf)[:n]
        if n == len(PING_PAYLOAD) and plain == PING_PAYLOAD:
            return
        if n == len(OCC_EXIT_PAYLOAD) and plain == OCC_EXIT_PAYLOAD:
            self.remove_peer(peer.peer_id)
            self._events.append(PeerExpired(peer.peer_id, "exit"))
            return
        if not self.peers.owns_source(peer, plain, 0, n):  # counted there
            return
        if self._tun_fd is None:
            peer.drop("no tun")
            return
        if n < SYN_MAX_LEN and (mss := self.config.mss_for(crypto.overhead)):
            clamp_mss(plain, 0, n, mss)
        try:
            if self._vnet_hdr:
                os.writev(self._tun_fd, (_ZERO_VNET_HDR, plain))
            else:
                os.write(self._tun_fd, plain)
        except OSError:
            peer.drop("tun write")
            return
        stats.rx_packets += 1
        stats.rx_bytes += n

    def _hand_up(self, data: bytes, source: Address) -> None:
        self._events.append(ControlDatagram(data, source))

    # -- the TUN, a datagram a packet (socket path) ---------------------------------------

    def _tx_datagrams(self, budget: int, now: float) -> int:
        buf, view = self._inbuf, memoryview(self._inbuf)
        count = 0
        while count < budget:
            try:
                n = os.readv(self._tun_fd, (buf,))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._count("tun read")
                break
            count += 1
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
            key = peer.keys[0]
            if key is not None and n < SYN_MAX_LEN and (mss := self.config.mss_for(key.overhead)):
                clamp_mss(view, 0, n, mss)  # mssfix both ways, as the XDP path's egress
            if self._send(peer, view[:n], now):  # inbuf -> outbuf
                peer.stats.tx_packets += 1
                peer.stats.tx_bytes += n
        return count

    def _send(self, peer: Peer, plaintext: bytes | memoryview, now: float) -> bool:
        crypto = peer.keys[0]
        if crypto is None:
            peer.drop("no key")
            return False
        try:
            n = crypto.encrypt_into(self._outbuf, plaintext, now)
        except ProtocolError as exc:
            peer.drop(drop_reason(exc))
            return False
        try:
            self.sock.sendto(memoryview(self._outbuf)[:n], peer.remote)
        except OSError as exc:
            peer.drop(f"send {errno.errorcode.get(exc.errno, exc.errno)}")
            return False
        peer.last_tx = now
        peer.stats.link_tx_packets += 1
        peer.stats.link_tx_bytes += n
        if crypto.needs_renegotiation and (peer.peer_id, crypto.key_id) not in self._renewing:
            self._renewing.add((peer.peer_id, crypto.key_id))
            self._events.append(KeyNeedsRenewal(peer.peer_id, crypto.key_id))
        return True

    # -- out ----------------------------------------------------------------------------

    def events(self) -> list[EngineEvent]:
        if not self._events:
            return []
        events = self._events.copy()  # Ingress and Egress hold the list's append
        self._events.clear()
        return events

    def peer_stats(self, peer_id: int) -> PeerStats:
        peer = self.peers.get(peer_id)
        stats = dataclasses.replace(peer.stats, drops=dict(peer.stats.drops))
        stats.last_rx, stats.last_tx = peer.last_rx, peer.last_tx
        return stats

    def activity(self) -> list[tuple[int, float, float]]:
        return [(peer.peer_id, peer.last_rx, peer.last_tx) for peer in self.peers]

    def drops(self) -> dict[str, int]:
        drops = dict(self._drops)
        for part in (*self._ingress, self._egress):
            for reason, count in (part.drops if part else {}).items():
                drops[reason] = drops.get(reason, 0) + count
        return drops

    def _count(self, reason: str) -> None:
        self._drops[reason] = self._drops.get(reason, 0) + 1

    def close(self) -> None:
        self._ingress.clear()
        self._egress = None
        self._events.clear()


def _key_for(peer: Peer, key_id: int) -> DataChannelCrypto | EpochDataChannel | None:
    for crypto in peer.keys:
        if crypto is not None and crypto.key_id == key_id:
            return crypto
    return None
