"""Runs one scenario against an engine and records everything it did, for the differential
tests of the native engine against the Python loops (no root).

- `FakeXsk` looks like xsk.XskSocket to both engines: its RX and fill rings are mmaps laid
  out as the kernel lays them out (producer, consumer, flags words, then the descriptors),
  so the C loop reads them through the same pointers it uses on a real socket;
- the "TUN" is an AF_UNIX SOCK_DGRAM socketpair (packet boundaries kept, vnet_hdr output
  compared as bytes);
- the UDP socket is real, on loopback; peers are sockets bound to 127.0.0.x that receive
  what the engine sends and send what it receives.
- the reference is pyengine.PythonEngine.
"""

from __future__ import annotations

import contextlib
import mmap
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xdp_ovpn.dataplane.api import Address, KeySlot
from xdp_ovpn.dataplane.engine import EngineConfig
from xdp_ovpn.dataplane.xsk import XskSocket, _Ring
from xdp_ovpn.proto.constants import EPOCH_KEY_LEN
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey
from xdp_ovpn.proto.epoch import EpochDataChannel
from xdp_ovpn.proto.epochkeys import EpochKey

FRAME_SIZE = 2048
FRAMES = 256
RING = 256
HEADROOM = 256  # copy mode puts the packet this far into its frame
SO_NO_CHECK = 11  # asm-generic/socket.h


class _Umem:
    def __init__(self) -> None:
        self._mem = mmap.mmap(-1, FRAMES * FRAME_SIZE)
        self.view = memoryview(self._mem)
        self.frame_size = FRAME_SIZE


class FakeXsk:
    """The RX side of an AF_XDP socket; the test plays the kernel (`deliver`, `refilled`)."""

    rx_batch = XskSocket.rx_batch
    fill = XskSocket.fill

    def __init__(self) -> None:
        self.umem = _Umem()
        self._rx = _Ring.anonymous(RING, 16)
        self._fr = _Ring.anonymous(RING, 8)
        self._next_frame = 0
        self._fd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # never woken: flags 0

    def fileno(self) -> int:
        return self._fd.fileno()

    def deliver(self, frames: Sequence[bytes]) -> None:
        """Write frames into UMEM chunks and their descriptors into the RX ring."""
        r = self._rx
        prod = r.words[r.prod]
        for i, frame in enumerate(frames):
            addr = self._next_frame * FRAME_SIZE + HEADROOM
            self._next_frame = (self._next_frame + 1) % FRAMES
            length = min(len(frame), FRAME_SIZE - HEADROOM)
            self.umem.view[addr : addr + length] = frame[:length]
            slot = (prod + i) & r.mask
            r.q[2 * slot] = addr
            r.d[4 * slot + 2] = length
        r.words[r.prod] = (prod + len(frames)) & 0xFFFFFFFF

    def refilled(self) -> list[int]:
        """Addresses given back on the fill ring since the last call."""
        r = self._fr
        cons, n = r.consumable(RING)
        out = r.take(r.q, 1, 0, cons & r.mask, n) if n else []
        r.words[r.cons] = (cons + n) & 0xFFFFFFFF
        return out

    def close(self) -> None:
        for ring in (self._rx, self._fr):
            ring.close()
        self.umem.view.release()
        self._fd.close()


# -- scenarios ---------------------------------------------------------------------------

KEYS = {
    "AES-256-GCM": 32, "AES-128-GCM": 16, "AES-192-GCM": 24, "CHACHA20-POLY1305": 32,
}


@dataclass(frozen=True)
class PeerSpec:
    peer_id: int
    host: str  # 127.0.0.x: where it receives and sends from
    port: int
    vpn_ipv4: str | None = None
    vpn_ipv6: str | None = None
    iroutes: tuple[str, ...] = ()


def float_address(spec: PeerSpec) -> Address:
    """Where a peer floats to: another loopback address, same port."""
    return spec.host.replace("127.0.0.", "127.0.1."), spec.port


def key_material(peer_id: int, key_id: int, cipher: str,
                 epoch: bool = False) -> tuple[bytes, bytes, bytes, bytes]:
    """Both directions' key and nonce tail, distinct per peer and key-id; for the epoch
    format both directions' E_1 secret and empty tails."""
    n = EPOCH_KEY_LEN if epoch else KEYS[cipher]
    tail = 0 if epoch else 8
    seed = peer_id * 8 + key_id
    def run(mult: int, size: int) -> bytes:
        return bytes((seed * mult + i) & 0xFF for i in range(size))

    return run(1, n), run(3, tail), run(5, n), run(7, tail)


def remote_crypto(peer_id: int, key_id: int, cipher: str,
                  epoch: bool = False) -> DataChannelCrypto | EpochDataChannel:
    """The peer's side of a key: it encrypts with our decrypt key and vice versa."""
    ek, en, dk, dn = key_material(peer_id, key_id, cipher, epoch)
    if epoch:
        return EpochDataChannel(key_id, peer_id, cipher, EpochKey(1, dk), EpochKey(1, ek),
                                replay_window=65536, replay_time=0)
    return DataChannelCrypto(key_id, peer_id, DataKey(cipher, dk, dn), DataKey(cipher, ek, en),
                             replay_window=65536, replay_time=0)


@dataclass
class Outcome:
    """Everything observable an engine did in a scenario."""

    tun: list[bytes] = field(default_factory=list)
    sent: list[tuple[int, int, bytes]] = field(default_factory=list)  # peer, address, data
    events: list = field(default_factory=list)
    stats: dict[int, Any] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    refilled: list[int] = field(default_factory=list)
    key_ids: dict[int, Any] = field(default_factory=dict)
    peer_ids: list[int] = field(default_factory=list)
    ledger: list[int] = field(default_factory=list)


class Rig:
    """The sockets around one engine for one scenario."""

    def __init__(self, factory: Callable[[socket.socket, EngineConfig], Any],
                 config: EngineConfig, peers: Sequence[PeerSpec], vnet_hdr: bool,
                 ledger_start: int = 0, family: int = socket.AF_INET,
                 no_gso: bool = False) -> None:
        # An IPv6 socket is dual-stack, as a server's on "::": IPv4 peers are IPv4-mapped.
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::", 0))
        self.sock.setblocking(False)
        if no_gso:  # SO_NO_CHECK: the kernel refuses UDP_SEGMENT (EINVAL), as without csum
            self.sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)  # offload on a route
        self.address = ("127.0.0.1", self.sock.getsockname()[1])
        mapped = "::ffff:" if family == socket.AF_INET6 else ""
        self.tun, self.tun_far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (self.tun, self.tun_far):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.peer_socks: dict[int, socket.socket] = {}
        self.float_socks: dict[int, socket.socket] = {}  # a peer's second address
        self.specs = list(peers)
        self.xsk = FakeXsk()
        self.ledger = memoryview(bytearray(4 * 64)).cast("I")
        for i in range(64):
            self.ledger[i] = ledger_start
        self.engine = factory(self.sock, config)
        self.engine.add_xsk(self.xsk)
        self.engine.set_tun(self.tun.fileno(), vnet_hdr)
        for spec in peers:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((spec.host, spec.port))
            s.setblocking(False)
            self.peer_socks[spec.peer_id] = s
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(float_address(spec))
            s.setblocking(False)
            self.float_socks[spec.peer_id] = s
            self.engine.add_peer(spec.peer_id, (mapped + spec.host, spec.port), spec.vpn_ipv4,
                                 spec.vpn_ipv6, spec.iroutes, 0.0)
        self.outcome = Outcome()

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.outcome.tun.append(self.tun_far.recv(1 << 17))
        for socks, where in ((self.peer_socks, 0), (self.float_socks, 1)):
            for peer_id, s in socks.items():
                with contextlib.suppress(BlockingIOError):
                    while True:
                        self.outcome.sent.append((peer_id, where, s.recv(1 << 17)))
        self.outcome.events += self.engine.events()
        self.outcome.refilled += self.xsk.refilled()

    def finish(self) -> Outcome:
        self.drain()
        out = self.outcome
        out.drops = self.engine.drops()
        out.peer_ids = self.engine.peer_ids()
        out.ledger = list(self.ledger)
        for spec in self.specs:
            if spec.peer_id in out.peer_ids:
                out.stats[spec.peer_id] = self.engine.peer_stats(spec.peer_id)
                out.key_ids[spec.peer_id] = self.engine.key_ids(spec.peer_id)
        return out

    def close(self) -> None:
        self.engine.close()
        for s in (self.sock, self.tun, self.tun_far, *self.peer_socks.values(),
                  *self.float_socks.values()):
            s.close()
        self.xsk.close()


def frame_header(src: str, sport: int, dst: Address, payload: bytes) -> bytes:
    """Ethernet + IPv4 + UDP + payload, as XDP hands a datagram to AF_XDP."""
    from tests.support.packets import ether, udp4

    return ether(udp4(src, dst[0], sport, dst[1], payload), b"\x02" * 6, src_mac=b"\x04" * 6)


def frame_header6(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    from tests.support.packets import ether, udp6

    return ether(udp6(src, dst, sport, dport, payload), b"\x02" * 6, src_mac=b"\x04" * 6)




def set_slot(engine: Any, peer_id: int, slot: int, key_id: int, cipher: str,
             ledger: memoryview | None, index: int, epoch: bool = False) -> None:
    ek, en, dk, dn = key_material(peer_id, key_id, cipher, epoch)
    engine.new_key(peer_id, KeySlot(slot), key_id, cipher, ek, en, dk, dn, ledger, index,
                   epoch=epoch)
