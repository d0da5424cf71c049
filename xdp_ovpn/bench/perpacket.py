"""`xdp-ovpn bench --per-packet`: the data path's userspace cost a packet, in-process.

The real `Ingress` and `Egress` loops and the real AEAD run, but the I/O around them is
replaced: the RX ring is a bytearray laid out as the kernel fills a UMEM (Ethernet, IPv4,
UDP, a DATA_V2 TCP segment sealed by a real sender), the TUN is /dev/null (ingress) or a
read that copies a ready packet (egress), the socket counts calls. The figures are the
CPU a packet costs in the worker's own code, without the kernel's share; the live share
is what `perf` and the bench's CPU figures add. No root, no namespaces.

Besides both loops it times two floors: the AEAD call alone, and the least any Python
sender has to do a packet (a read call, header and nonce, the AEAD call, the tag move).

The native engine (xdp_ovpn._native, when built) is timed the same way for AES-256-GCM and
ChaCha20-Poly1305: its receive loop reads a stand-in RX ring laid out as the kernel's (the
C code reads the ring words and descriptors itself) and writes to /dev/null; its send loop
takes each TUN read from a template packet and seals the runs without sending them
(`bench_io`), as the Python send loop's stand-in reader and socket do.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xdp_ovpn.dataplane.io import Egress, Ingress
from xdp_ovpn.dataplane.offload import VNET_HDR_LEN, fold
from xdp_ovpn.dataplane.peers import Peer, PeerTable
from xdp_ovpn.proto.constants import (
    AEAD_TAG_LEN,
    DATA_V2_AAD_LEN,
    DATA_V2_HEADER_LEN,
    OPCODE_SHIFT,
    Opcode,
)
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey

BATCH = 64  # packets per RX batch and per TUN drain, as the worker runs them
TCP_PAYLOAD = 1448  # a full segment at the tunnel's default MTU, with timestamps
FRAME_SIZE = 2048
_KEY = DataKey("AES-256-GCM", bytes(range(32)), bytes(range(8)))
NATIVE_CIPHERS = ("AES-256-GCM", "CHACHA20-POLY1305")
_PEER_ID = 7
_REMOTE = ("10.1.0.2", 1194)
_IP_TCP_TS = struct.Struct("!BBHHHBBH4s4sHHIIBBHHHBBBBII")
_NOTHING: Callable[[object], None] = lambda _event: None  # noqa: E731


@dataclass(frozen=True)
class PerPacket:
    """Microseconds a packet (medians of `rounds` batches of BATCH packets)."""

    receive: float  # RX descriptors -> parse -> peer, key, replay -> decrypt -> TUN writev
    send: float  # TUN read -> GSO run -> seal_run -> sendmsg
    send_floor: float  # read call, header, nonce, AEAD call, tag move: nothing else
    aead_encrypt: float  # AESGCM.encrypt_into alone, TCP_PAYLOAD + 52 bytes
    aead_decrypt: float
    python: str
    cryptography: str
    # cipher -> (receive, send, AEAD encrypt call alone, the same seal in C alone) of the
    # native engine; empty when the extension is not built
    native: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    # cipher -> (receive, send) of the python engine for the ciphers besides AES-256-GCM
    python_ciphers: dict[str, tuple[float, float]] = field(default_factory=dict)


def _tcp_segment(seq: int) -> bytes:
    """IPv4 + TCP (NOP, NOP, timestamps) + TCP_PAYLOAD bytes: Linux's usual segment."""
    header = _IP_TCP_TS.pack(0x45, 0, 52 + TCP_PAYLOAD, 0, 0x4000, 64, 6, 0,
                             bytes((10, 8, 0, 1)), bytes((10, 8, 0, 2)), 5201, 40000, seq, 1,
                             8 << 4, 0x10, 502, 0, 0, 1, 1, 8, 10, 1, 1)
    return header + bytes(TCP_PAYLOAD)


def _frame(wire: bytes) -> bytes:
    """Ethernet + IPv4 + UDP around a DATA_V2 packet, as XDP hands it to AF_XDP."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(wire), 0, 0x4000, 64, 17, 0,
                     bytes((10, 1, 0, 2)), bytes((10, 1, 0, 1)))
    checksum = ~fold(sum(struct.unpack("!10H", ip))) & 0xFFFF
    ip = ip[:10] + checksum.to_bytes(2, "big") + ip[12:]
    udp = struct.pack("!HHHH", 1194, 1194, 8 + len(wire), 0)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp + wire


class _Umem:
    def __init__(self) -> None:
        self.view = memoryview(bytearray(BATCH * FRAME_SIZE))
        self.frame_size = FRAME_SIZE


class _RxRing:
    """Stands in for an AF_XDP socket: hands out one batch of frames each time it is given one."""

    def __init__(self) -> None:
        self.umem = _Umem()
        self.addrs = [i * FRAME_SIZE for i in range(BATCH)]
        self.lens: list[int] = []

    def load(self, frames: list[bytes]) -> None:
        for addr, frame in zip(self.addrs, frames, strict=True):
            self.umem.view[addr : addr + len(frame)] = frame
        self.lens = [len(f) for f in frames]

    def rx_batch(self, max_n: int) -> tuple[list[int], list[int]]:
        lens, self.lens = self.lens, []
        return (self.addrs[: len(lens)], lens) if lens else ([], [])

    def fill(self, addrs: list[int]) -> int:
        return len(addrs)


class _CountingSocket:
    """Stands in for the UDP socket: keeps the last datagram run, counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.last = b""
        self.segment = 0

    def sendmsg(self, buffers: list, ancdata: list, flags: int, address: object) -> int:
        self.calls += 1
        self.last = bytes(buffers[0])
        self.segment = struct.unpack("=H", ancdata[0][2])[0]
        return len(self.last)

    def sendto(self, data: memoryview, address: object) -> int:
        self.calls += 1
        self.last = bytes(data)
        self.segment = len(data)
        return len(data)


def _sealed_batch(sender: DataChannelCrypto, round_: int) -> list[bytes]:
    """Round `round_`'s BATCH frames: consecutive TCP segments of one flow, sealed."""
    first = 1 + round_ * BATCH * TCP_PAYLOAD
    return [_frame(sender.encrypt(_tcp_segment(first + i * TCP_PAYLOAD), 0.0))
            for i in range(BATCH)]


def _median(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2] * 1e6 / BATCH


def _key(cipher: str) -> DataKey:
    return _KEY if cipher == _KEY.cipher else DataKey(cipher, bytes(range(32)), bytes(range(8)))


def receive_cost(rounds: int, cipher: str = _KEY.cipher) -> tuple[float, Peer]:
    """Ingress.poll over rounds of BATCH sealed TCP segments; (µs a packet, the peer)."""
    key = _key(cipher)
    sender = DataChannelCrypto(0, _PEER_ID, key, key)
    peer = Peer(_PEER_ID, _REMOTE, vpn_ipv4="10.8.0.1")  # the segments' (checked) source
    peer.keys[0] = DataChannelCrypto(0, _PEER_ID, key, key)
    peers = PeerTable()
    peers.add(peer)
    ring = _RxRing()
    ingress = Ingress(ring, -1, peers, _NOTHING)  # type: ignore[arg-type]
    null = os.open(os.devnull, os.O_WRONLY)
    samples = []
    try:
        ingress.set_tun(null, vnet_hdr=True)
        for round_ in range(rounds):
            ring.load(_sealed_batch(sender, round_))
            start = time.perf_counter()
            ingress.poll(BATCH)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(null)
    return _median(samples), peer


def send_cost(rounds: int, cipher: str = _KEY.cipher
              ) -> tuple[float, _CountingSocket, DataChannelCrypto]:
    """Egress.poll draining BATCH packets a round; (µs a packet, the socket, the key)."""
    read_out = bytes(VNET_HDR_LEN) + _tcp_segment(1)  # what a vnet_hdr TUN read returns
    budget = [0]

    def read(view: memoryview) -> int | None:
        if not budget[0]:
            return None  # EAGAIN: the TUN is drained
        budget[0] -= 1
        view[: len(read_out)] = read_out
        return len(read_out)

    key = _key(cipher)
    crypto = DataChannelCrypto(0, _PEER_ID, key, key)
    peer = Peer(_PEER_ID, _REMOTE)
    peer.keys[0] = crypto
    peers = PeerTable(single=True)
    peers.add(peer)
    sock = _CountingSocket()
    egress = Egress(-1, sock, peers, _NOTHING, vnet_hdr=True, reader=read)  # type: ignore[arg-type]
    samples = []
    for _ in range(rounds):
        budget[0] = BATCH
        start = time.perf_counter()
        egress.poll()
        samples.append(time.perf_counter() - start)
    return _median(samples), sock, crypto


def send_floor(rounds: int) -> float:
    """The least a Python sender does a packet: read call, header, nonce, AEAD, tag move."""
    aead = _KEY.aead()
    nonce = bytearray(4) + _KEY.nonce_tail
    packet = _tcp_segment(1)
    size = len(packet)
    stride = size + DATA_V2_HEADER_LEN
    buf = memoryview(bytearray(BATCH * stride + AEAD_TAG_LEN))
    head, pid_into = struct.Struct("!II").pack_into, struct.Struct("!I").pack_into
    word = (Opcode.DATA_V2 << OPCODE_SHIFT) << 24 | _PEER_ID  # key-id 0

    def read(view: memoryview) -> int:
        view[:size] = packet
        return size

    samples = []
    pid = 1
    for _ in range(rounds):
        start = time.perf_counter()
        for at in range(0, BATCH * stride, stride):
            body = at + DATA_V2_HEADER_LEN
            end = body + size
            read(buf[body:end])
            head(buf, at, word, pid)
            pid_into(nonce, 0, pid)
            aead.encrypt_into(nonce, buf[body:end], buf[at : at + DATA_V2_AAD_LEN],
                              buf[body : end + AEAD_TAG_LEN])
            buf[at + DATA_V2_AAD_LEN : body] = buf[end : end + AEAD_TAG_LEN]
            pid += 1
        samples.append(time.perf_counter() - start)
    return _median(samples)


def aead_cost(rounds: int) -> tuple[float, float]:
    """(encrypt_into, decrypt_into) alone on one DATA_V2 payload, µs a call."""
    aead = _KEY.aead()
    nonce = bytes(12)
    size = len(_tcp_segment(1))
    plain = memoryview(bytearray(size))
    sealed = memoryview(bytearray(size + AEAD_TAG_LEN))
    aad = bytes(DATA_V2_AAD_LEN)
    aead.encrypt_into(nonce, plain, aad, sealed)
    results = []
    for call, args in ((aead.encrypt_into, (nonce, plain, aad, sealed)),
                       (aead.decrypt_into, (nonce, sealed, aad, plain))):
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(BATCH):
                call(*args)
            samples.append(time.perf_counter() - start)
        results.append(_median(samples))
    return results[0], results[1]


class _NativeRx:
    """A stand-in AF_XDP socket for the native engine: RX and fill rings with the kernel's
    layout over anonymous memory, a UMEM of BATCH frames; this code plays the kernel."""

    def __init__(self) -> None:
        from xdp_ovpn.dataplane.xsk import _Ring

        self.umem = _Umem()
        self._rx, self._fr = _Ring.anonymous(BATCH, 16), _Ring.anonymous(BATCH, 8)

    def fileno(self) -> int:
        return -1  # never woken: the fill ring's flags stay 0

    def load(self, frames: list[bytes]) -> None:
        r, fr = self._rx, self._fr
        prod = r.words[r.prod]
        for i, frame in enumerate(frames):
            addr = i * FRAME_SIZE
            self.umem.view[addr : addr + len(frame)] = frame
            slot = (prod + i) & r.mask
            r.q[2 * slot], r.d[4 * slot + 2] = addr, len(frame)
        r.words[r.prod] = (prod + len(frames)) & 0xFFFFFFFF
        fr.words[fr.cons] = fr.words[fr.prod]  # the kernel took back what was given


def _native_engine(cipher: str, single: bool) -> tuple[object, DataKey]:
    import socket

    from xdp_ovpn.dataplane.engine import EngineConfig
    from xdp_ovpn.dataplane.nativeengine import NativeEngine
    from xdp_ovpn.proto.constants import AEAD_CIPHERS

    key = DataKey(cipher, bytes(range(AEAD_CIPHERS[cipher])), bytes(range(8)))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # never sent on
    engine = NativeEngine(sock, EngineConfig(single_peer=single, replay_window=64,
                                             replay_time=15, gso=True))
    engine.add_peer(_PEER_ID, _REMOTE, None, None, (), 0.0)
    engine.new_key(_PEER_ID, 0, 0, cipher, key.key, key.nonce_tail, key.key, key.nonce_tail)
    return engine, key


def native_receive_cost(cipher: str, rounds: int) -> tuple[float, object]:
    """The native rx_xsk over rounds of BATCH sealed TCP segments; (µs a packet, engine)."""
    engine, key = _native_engine(cipher, single=False)
    sender = DataChannelCrypto(0, _PEER_ID, key, key)
    ring = _NativeRx()
    engine.add_xsk(ring)
    null = os.open(os.devnull, os.O_WRONLY)
    samples = []
    try:
        engine.set_tun(null, True)
        for round_ in range(rounds):
            ring.load(_sealed_batch(sender, round_))
            start = time.perf_counter()
            engine.rx_xsk(0, BATCH, 0.0)
            samples.append(time.perf_counter() - start)
        stats = engine.peer_stats(_PEER_ID)
    finally:
        engine.close()
        os.close(null)
    return _median(samples), stats


def native_send_cost(cipher: str, rounds: int) -> tuple[float, object, DataKey]:
    """The native tx draining BATCH template reads a round, runs sealed, not sent;
    (µs a packet, the engine, the key)."""
    engine, key = _native_engine(cipher, single=True)
    null = os.open(os.devnull, os.O_RDONLY)
    samples = []
    try:
        engine.set_tun(null, True)
        engine._c.bench_io(bytes(VNET_HDR_LEN) + _tcp_segment(1))
        for _ in range(rounds):
            start = time.perf_counter()
            engine.tx(BATCH, 0.0)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(null)
    return _median(samples), engine, key


def aead_encrypt_cost(cipher: str, rounds: int) -> float:
    """cryptography's encrypt_into alone for `cipher`, µs a call (the floor per cipher)."""
    key = DataKey(cipher, bytes(32), bytes(8))
    aead = key.aead()
    nonce, aad = bytes(12), bytes(DATA_V2_AAD_LEN)
    plain = memoryview(bytearray(len(_tcp_segment(1))))
    sealed = memoryview(bytearray(len(plain) + AEAD_TAG_LEN))
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(BATCH):
            aead.encrypt_into(nonce, plain, aad, sealed)
        samples.append(time.perf_counter() - start)
    return _median(samples)


def native_seal_cost(cipher: str, rounds: int) -> float:
    """The native engine's own AEAD seal (EVP, nonce and AAD per packet) alone, µs a call."""
    from xdp_ovpn import _native
    from xdp_ovpn.dataplane.nativeengine import _CIPHERS

    size, code = len(_tcp_segment(1)), _CIPHERS[cipher]
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        _native.seal_many(code, size, BATCH)
        samples.append(time.perf_counter() - start)
    return _median(samples)


def native_costs(rounds: int) -> dict[str, tuple[float, float, float, float]]:
    """cipher -> (receive, send, AEAD call alone, C seal alone) for the native engine;
    {} if it is not built."""
    from xdp_ovpn.dataplane.engine import native_available

    if not native_available():
        return {}
    out = {}
    for cipher in NATIVE_CIPHERS:
        send, engine, _ = native_send_cost(cipher, rounds)
        engine.close()
        out[cipher] = (native_receive_cost(cipher, rounds)[0], send,
                       aead_encrypt_cost(cipher, rounds), native_seal_cost(cipher, rounds))
    return out


def measure(rounds: int = 2000) -> PerPacket:
    import cryptography

    encrypt, decrypt = aead_cost(rounds)
    return PerPacket(
        receive=receive_cost(rounds)[0],
        send=send_cost(rounds)[0],
        send_floor=send_floor(rounds),
        aead_encrypt=encrypt,
        aead_decrypt=decrypt,
        python=sys.version.split()[0],
        cryptography=cryptography.__version__,
        native=native_costs(rounds),
        python_ciphers={cipher: (receive_cost(rounds, cipher)[0], send_cost(rounds, cipher)[0])
                        for cipher in NATIVE_CIPHERS if cipher != _KEY.cipher},
    )


def report(result: PerPacket) -> str:
    lines = [
        f"Data path cost a packet, in-process (Python {result.python}, cryptography "
        f"{result.cryptography}, AES-256-GCM, {BATCH}-packet batches, "
        f"{TCP_PAYLOAD}-byte TCP segments, median batch):",
        f"  receive   RX descriptors -> decrypt -> coalesced TUN writev  {result.receive:6.2f} µs",
        f"  send      TUN read -> GSO run sealed in place -> sendmsg     {result.send:6.2f} µs",
        f"  send floor: read call, header, nonce, AEAD, tag move       {result.send_floor:6.2f} µs",
        f"  AEAD call alone: encrypt_into {result.aead_encrypt:.2f} µs, "
        f"decrypt_into {result.aead_decrypt:.2f} µs",
    ]
    for cipher, (receive, send) in result.python_ciphers.items():
        lines.append(f"  python engine, {cipher}: receive {receive:.2f} µs, send {send:.2f} µs")
    if not result.native:
        lines.append("Native engine: not built (xdp_ovpn._native missing).")
    for cipher, (receive, send, aead, seal) in result.native.items():
        lines.append(f"  native engine, {cipher}: receive {receive:.2f} µs, send {send:.2f} µs; "
                     f"the AEAD call alone {aead:.2f} µs (receive {receive - aead:+.2f}, "
                     f"send {send - aead:+.2f}); its own C seal alone {seal:.2f} µs")
    lines.append("The kernel's share (TUN and socket syscalls, XDP, copies) comes on top: see "
                 "docs/benchmarks.md.")
    return "\n".join(lines) + "\n"

