"""The native engine against the Python loops, batch for batch: hypothesis builds a scenario
(several peers, key swaps and the lame-duck key, replays, reordering past the window,
truncated and corrupted frames, unknown peer-ids, floats, IPv4 and IPv6 inner packets, pings,
OCC exit, TCP runs for the coalescer, TUN packets in GSO runs, packet-ids near renewal and
exhaustion, keys in 2.7's epoch format beside 2.6 ones with the peer moving to later
epochs), both engines run it in their own rig, and everything observable must be equal:
the bytes written to the TUN, the datagrams sent, the events, the counters and drop reasons,
the frames given back to the fill ring, the packet-id ledger. No root."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.support.native_harness import (
    FakeXsk,
    PeerSpec,
    Rig,
    float_address,
    frame_header,
    frame_header6,
    remote_crypto,
    set_slot,
)
from tests.support.packets import checksum
from xdp_ovpn.dataplane.engine import EngineConfig
from xdp_ovpn.dataplane.nativeengine import NativeEngine
from xdp_ovpn.dataplane.pyengine import PythonEngine
from xdp_ovpn.proto.constants import OCC_EXIT_PAYLOAD, PING_PAYLOAD
from xdp_ovpn.proto.epoch import EpochDataChannel

CIPHERS = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305", "AES-192-GCM")
PEERS = (
    PeerSpec(1, "127.0.0.2", 40001, "10.8.0.2", "fd00::2"),
    PeerSpec(2, "127.0.0.3", 40002, "10.8.0.3", "fd00::3", ("192.168.2.0/24",)),
    PeerSpec(5, "127.0.0.4", 40005, "10.8.0.4", None, ("192.168.0.0/16", "fd01::/32")),
)
DST = ("10.0.0.1", 1194)
LEDGER_STARTS = (0, 0, 0xFF000000 - 40, 0xFFFFFFFF - 30)
# Which keys are in the epoch format: none, all, or those of odd key-ids (both formats in
# one run, and a peer's key swaps changing format). Its ledger slot holds receive << 16 |
# send epoch: a start of 2 is a restarted worker's (it sends in epoch 3), 2 << 16 | 1 one
# whose peer had moved to epoch 2 (its epoch-1 packets are now refused), 0xEFFF one near the
# end of the chain (it sends in 0xF000: renewal wanted).
EPOCH_MODES = ("none", "all", "odd")
EPOCH_LEDGER_STARTS = (0, 0, 2, 2 << 16 | 1, 0xEFFF)


def is_epoch(mode: str, key_id: int) -> bool:
    return mode == "all" or (mode == "odd" and key_id % 2 == 1)


# -- inner packets -------------------------------------------------------------------------

def ipv4(src: bytes, dst: bytes, proto: int, body: bytes) -> bytes:
    head = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, 64,
                                 proto, 0, src, dst))
    head[10:12] = struct.pack("!H", checksum(bytes(head)))
    return bytes(head) + body


def ipv6(src: bytes, dst: bytes, proto: int, body: bytes) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(body), proto, 64) + src + dst + body


def tcp(seq: int, flags: int, payload: bytes, ts: bool = True, mss: int | None = None,
        ack: int = 1) -> bytes:
    opts = b""
    if mss is not None:
        opts += struct.pack("!BBH", 2, 4, mss)
    if ts:
        opts += bytes((1, 1, 8, 10)) + struct.pack("!II", 7, 9)
    while len(opts) % 4:
        opts += b"\x01"
    doff = (20 + len(opts)) // 4
    return struct.pack("!HHIIBBHHH", 5201, 40000, seq, ack, doff << 4, flags, 500, 0x1234,
                       0) + opts + payload


@dataclass
class Remote:
    """The peers' side: their senders per key-id and what they sent (for replays)."""

    ciphers: dict[int, str]
    epoch_mode: str = "none"
    senders: dict[tuple[int, int], Any] = field(default_factory=dict)
    sent: list[bytes] = field(default_factory=list)
    seq: dict[int, int] = field(default_factory=dict)

    def seal(self, peer_id: int, key_id: int, plain: bytes, rotate: bool = False) -> bytes:
        """A packet from the peer; `rotate`: an epoch key moves on to its next epoch first."""
        key = (peer_id, key_id)
        if key not in self.senders:
            self.senders[key] = remote_crypto(peer_id, key_id, self.ciphers[peer_id],
                                              is_epoch(self.epoch_mode, key_id))
        sender = self.senders[key]
        if rotate and isinstance(sender, EpochDataChannel):
            sender.rotate_send()
        packet = sender.encrypt(plain, 0.0)
        self.sent.append(packet)
        return packet


def inner_packets(draw: Any, spec: PeerSpec, remote: Remote) -> list[bytes]:
    """Plaintexts a peer sends: a TCP run, pings, OCC exit, SYNs, spoofed, junk."""
    kind = draw(st.sampled_from(["run4", "run6", "ping", "syn", "udp", "junk", "spoof", "exit"]))
    src4 = bytes(int(x) for x in (spec.vpn_ipv4 or "10.9.9.9").split("."))
    src6 = ipaddress.ip_address(spec.vpn_ipv6 or "fd00::99").packed
    dst4, dst6 = bytes((10, 8, 0, 1)), bytes(15) + b"\x01"
    if kind in ("run4", "run6"):
        count = draw(st.integers(1, 12))
        size = draw(st.sampled_from([100, 1200, 1448]))
        seq = remote.seq.get(spec.peer_id, 1000)
        out = []
        for i in range(count):
            last = i == count - 1
            n = draw(st.integers(1, size)) if last and draw(st.booleans()) else size
            flags = 0x18 if last and draw(st.booleans()) else 0x10
            if draw(st.integers(0, 9)) == 0:
                seq += 1  # a gap: the run breaks
            segment = tcp(seq, flags, bytes([i]) * n, ts=draw(st.booleans()) if i == 0 else True)
            out.append(ipv4(src4, dst4, 6, segment) if kind == "run4"
                       else ipv6(src6, dst6, 6, segment))
            seq += n
        remote.seq[spec.peer_id] = seq
        return out
    if kind == "ping":
        return [PING_PAYLOAD]
    if kind == "exit":
        return [OCC_EXIT_PAYLOAD]
    if kind == "syn":
        mss = draw(st.sampled_from([536, 1460, 9000]))
        segment = tcp(1, 0x02, b"", ts=draw(st.booleans()), mss=mss)
        v4 = draw(st.booleans())
        return [ipv4(src4, dst4, 6, segment) if v4 else ipv6(src6, dst6, 6, segment)]
    if kind == "udp":
        return [ipv4(src4, dst4, 17, bytes(draw(st.integers(8, 300))))]
    if kind == "spoof":  # someone else's address, an iroute's, nobody's, link-local
        source = ipaddress.ip_address(draw(st.sampled_from(
            ["172.16.0.9", "10.8.0.3", "192.168.2.5", "192.168.7.7", "fe80::1", "fd00::3",
             "fd01::9", "::ffff:10.8.0.2"]))).packed
        if len(source) == 4:
            return [ipv4(source, dst4, 17, bytes(20))]
        return [ipv6(source, dst6, 17, bytes(20))]
    return [draw(st.binary(min_size=1, max_size=80))]


def mangle(draw: Any, frame: bytes) -> bytes:
    """Truncated, corrupted, fragmented or otherwise broken frames (Ethernet/IPv4/UDP)."""
    how = draw(st.sampled_from(["cut", "flip", "frag", "proto", "arp", "ulen", "options"]))
    if how == "cut":
        return frame[: draw(st.integers(0, len(frame) - 1))]
    if how == "flip":
        at = draw(st.integers(0, len(frame) - 1))
        return frame[:at] + bytes([frame[at] ^ draw(st.integers(1, 255))]) + frame[at + 1 :]
    if how == "frag":
        return frame[:20] + b"\x20\x00" + frame[22:]
    if how == "proto":
        return frame[:23] + b"\x06" + frame[24:]
    if how == "arp":
        return frame[:12] + b"\x08\x06" + frame[14:]
    if how == "ulen":
        return frame[:38] + struct.pack("!H", draw(st.integers(0, 3000))) + frame[40:]
    # IPv4 options: IHL 6 and four NOPs, the rest of the frame shifted
    ip = bytearray(frame[14:34])
    ip[0] = 0x46
    ip[2:4] = struct.pack("!H", len(frame) - 14 + 4)
    return frame[:14] + bytes(ip) + b"\x01\x01\x01\x00" + frame[34:]


@dataclass(frozen=True)
class Offloaded:
    """What a TUN with offloads hands the native engine (vnet header + packet) and what the
    Python engine, whose TUN has them off, reads for it instead."""

    native: bytes
    python: tuple[bytes, ...]


def _tcp_checksum(ip_header: bytes, segment: bytes, v6: bool) -> int:
    if v6:
        pseudo = ip_header[8:40] + struct.pack("!IxxxB", len(segment), 6)
    else:
        pseudo = ip_header[12:20] + struct.pack("!xBH", 6, len(segment))
    return checksum(pseudo + segment)


def kernel_segments(packet: bytes, mss: int) -> list[bytes]:
    """The segments Linux's TCP GSO cuts a super-packet into (tcp_gso_segment,
    inet_gso_segment): lengths, IPv4 id + i, seq + i * mss, FIN/PSH on the last segment
    only, CWR on the first only, checksums computed."""
    v6 = packet[0] >> 4 == 6
    ip = 40 if v6 else (packet[0] & 0x0F) * 4
    hlen = ip + (packet[ip + 12] >> 4) * 4
    body = packet[hlen:]
    seq = struct.unpack_from("!I", packet, ip + 4)[0]
    out = []
    for i, off in enumerate(range(0, len(body), mss)):
        chunk = body[off : off + mss]
        head = bytearray(packet[:hlen])
        if v6:
            head[4:6] = struct.pack("!H", hlen - 40 + len(chunk))
        else:
            head[2:4] = struct.pack("!H", hlen + len(chunk))
            head[4:6] = struct.pack("!H", (struct.unpack_from("!H", packet, 4)[0] + i) & 0xFFFF)
            head[10:12] = b"\0\0"
            head[10:12] = struct.pack("!H", checksum(bytes(head[:ip])))
        head[ip + 4 : ip + 8] = struct.pack("!I", (seq + off) & 0xFFFFFFFF)
        if i:
            head[ip + 13] &= ~0x80
        if off + mss < len(body):
            head[ip + 13] &= ~0x09
        head[ip + 16 : ip + 18] = b"\0\0"
        csum = _tcp_checksum(bytes(head[:ip]), bytes(head[ip:]) + chunk, v6)
        head[ip + 16 : ip + 18] = struct.pack("!H", csum)
        out.append(bytes(head) + chunk)
    return out


def offloaded(draw: Any) -> Offloaded:
    """A TCP super-packet (TSO) or a packet with its checksum left to finish (CSUM)."""
    v6 = draw(st.booleans())
    dst = draw(st.sampled_from(["10.8.0.2", "10.8.0.4", "192.168.2.7", "10.99.0.1"]))
    src4, dst4 = bytes((10, 8, 0, 1)), ipaddress.ip_address(dst).packed
    src6, dst6 = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address(
        draw(st.sampled_from(["fd00::2", "fd01::7", "fd09::1"]))).packed
    flags = 0x10 | draw(st.sampled_from([0, 0x08, 0x09, 0x80, 0x88]))
    payload = bytes(range(256)) * 80
    size = draw(st.integers(1, 9000))
    segment = tcp(draw(st.integers(0, 2**32 - 1)), flags, payload[:size], ts=draw(st.booleans()))
    packet = bytearray(ipv6(src6, dst6, 6, segment) if v6 else ipv4(src4, dst4, 6, segment))
    if not v6:
        packet[4:6] = struct.pack("!H", draw(st.integers(0, 0xFFFF)))  # the IP id
        packet[10:12] = b"\0\0"
        packet[10:12] = struct.pack("!H", checksum(bytes(packet[:20])))
    ip = 40 if v6 else 20
    hlen = ip + (packet[ip + 12] >> 4) * 4
    kind = draw(st.sampled_from(["tso", "csum"]))
    mss = draw(st.sampled_from([536, 1200, 1448]))
    if kind == "tso" and size > mss:
        header = struct.pack("=BBHHHH", 1, 4 if v6 else 1, hlen, mss, ip, 16)
        return Offloaded(header + bytes(packet), tuple(kernel_segments(bytes(packet), mss)))
    # the checksum field holds the pseudo header's sum, as the kernel leaves it (partial)
    packet[ip + 16 : ip + 18] = b"\0\0"
    packet[ip + 16 : ip + 18] = struct.pack("!H", _tcp_checksum(bytes(packet[:ip]),
                                                                bytes(packet[ip:]), v6))
    full = bytes(packet)
    tcp_len = len(packet) - ip
    pseudo = (bytes(packet[8:40]) + struct.pack("!IxxxB", tcp_len, 6) if v6
              else bytes(packet[12:20]) + struct.pack("!xBH", 6, tcp_len))
    partial = (~checksum(pseudo)) & 0xFFFF
    packet[ip + 16 : ip + 18] = struct.pack("!H", partial)
    header = struct.pack("=BBHHHH", 1, 0, 0, 0, ip, 16)
    return Offloaded(header + bytes(packet), (full,))


@dataclass
class Scenario:
    config: EngineConfig
    peers: tuple[PeerSpec, ...]
    ciphers: dict[int, str]
    vnet_hdr: bool
    ledger_start: int
    family: int = socket.AF_INET
    no_gso: bool = False  # the socket refuses UDP_SEGMENT: both fall back for good
    steps: list[tuple] = field(default_factory=list)
    epoch_mode: str = "none"


@st.composite
def scenarios(draw: Any) -> Scenario:
    single = draw(st.booleans())
    peers = PEERS[:1] if single else PEERS
    gso = draw(st.booleans())
    mss = draw(st.sampled_from([0, 1300]))
    config = EngineConfig(
        single_peer=single,
        replay_window=draw(st.sampled_from([4, 16, 64])),
        replay_time=draw(st.sampled_from([0, 2.0])),
        mss=mss,
        mss_epoch=draw(st.sampled_from([None, mss - 4])) if mss else None,
        gso=gso,
        check_source=not single,  # as the workers configure it
    )
    ciphers = {p.peer_id: draw(st.sampled_from(CIPHERS)) for p in peers}
    # vnet_hdr TUNs belong to the XDP worker, which sends in GSO runs; the socket worker's
    # one-datagram sends read plain TUNs
    vnet_hdr = config.gso and draw(st.booleans())
    epoch_mode = draw(st.sampled_from(EPOCH_MODES))
    starts = LEDGER_STARTS if epoch_mode == "none" else EPOCH_LEDGER_STARTS
    sc = Scenario(config, peers, ciphers, vnet_hdr, draw(st.sampled_from(starts)),
                  draw(st.sampled_from([socket.AF_INET, socket.AF_INET6])),
                  gso and draw(st.integers(0, 2)) == 0, epoch_mode=epoch_mode)
    remote = Remote(ciphers, epoch_mode)
    key_ids = {p.peer_id: 0 for p in peers}  # the newest key-id each peer has
    for _ in range(draw(st.integers(1, 10))):
        step = draw(st.sampled_from(["xsk", "xsk", "sock", "tun", "tun", "send", "key"]))
        dt = draw(st.sampled_from([0.0, 0.1, 0.7, 3.0]))
        if step in ("xsk", "sock"):
            items: list[tuple] = []  # (peer index for the source, float?, datagram)
            for _ in range(draw(st.integers(1, 5))):
                spec = draw(st.sampled_from(peers))
                kid = draw(st.sampled_from(sorted({key_ids[spec.peer_id],
                                                    max(key_ids[spec.peer_id] - 1, 0)})))
                moved = draw(st.integers(0, 7)) == 0
                what = draw(st.sampled_from(["data"] * 6 + ["replay", "unknown", "control",
                                                            "v1", "bad", "rotate"]))
                if what == "replay" and remote.sent:
                    packets = [draw(st.sampled_from(remote.sent))]
                elif what == "control":
                    packets = [b"\x20" + draw(st.binary(min_size=0, max_size=60))]
                elif what == "v1":
                    packets = [b"\x30" + draw(st.binary(min_size=0, max_size=60))]
                else:
                    packets = [remote.seal(spec.peer_id, kid, plain, what == "rotate" and i == 0)
                               for i, plain in enumerate(inner_packets(draw, spec, remote))]
                    if what == "unknown":
                        packets = [p[:1] + b"\x00\x00\x4d" + p[4:] for p in packets]
                    if len(packets) > 2 and draw(st.booleans()):  # reordered
                        random.Random(draw(st.integers(0, 99))).shuffle(packets)
                    if what == "bad" and step == "sock":
                        packets = [p[: draw(st.integers(0, len(p)))] for p in packets]
                for packet in packets:
                    items.append((spec, moved, packet, what == "bad" and step == "xsk"))
            frames_or_datagrams = []
            for spec, moved, packet, broken in items[:64]:
                if step == "sock":
                    frames_or_datagrams.append((spec.peer_id, moved, packet))
                    continue
                host, port = float_address(spec) if moved else (spec.host, spec.port)
                if draw(st.integers(0, 15)) == 0:  # IPv6 outside: from no peer (the peers'
                    # remotes are IPv4: a float there could not be sent to on this socket)
                    packet = packet[:1] + b"\x00\x00\x4d" + packet[4:]
                    frame = frame_header6("fd00:99::1", port, "fd00:99::2", DST[1], packet)
                else:
                    frame = frame_header(host, port, DST, packet)
                frames_or_datagrams.append(mangle(draw, frame) if broken else frame)
            if step == "xsk" and draw(st.integers(0, 4)) == 0:  # noise off the wire
                frames_or_datagrams.append(draw(st.binary(max_size=300)))
            sc.steps.append((step, dt, frames_or_datagrams))
        elif step == "tun":
            packets = []
            for _ in range(draw(st.integers(1, 6))):
                target = draw(st.sampled_from(["10.8.0.2", "10.8.0.3", "10.8.0.4", "192.168.2.7",
                                               "192.168.9.9", "10.77.0.1", "fd00::2", "fd01::5",
                                               "fd02::1", "junk"]))
                size = draw(st.sampled_from([40, 300, 1400]))
                count = draw(st.integers(1, 20))
                for i in range(count):
                    n = draw(st.integers(20, size)) if i == count - 1 else size
                    if target == "junk":
                        packet = draw(st.binary(min_size=0, max_size=30))
                    elif ":" in target:
                        dst = ipaddress.ip_address(target).packed
                        packet = ipv6(bytes(16), dst, 17, bytes(max(n - 40, 0)))
                    else:
                        dst = bytes(int(x) for x in target.split("."))
                        packet = ipv4(bytes((10, 8, 0, 1)), dst, 17, bytes(max(n - 20, 0)))
                    packets.append(packet)
            if draw(st.booleans()):
                packets.append(ipv4(bytes(4), bytes((10, 8, 0, 3)), 6,
                                    tcp(1, 0x02, b"", mss=1460)))
            packets = packets[:64]
            if vnet_hdr:  # TUN offloads on: super-packets and partial checksums to finish
                for _ in range(draw(st.integers(0, 3))):
                    at = draw(st.integers(0, len(packets)))
                    packets.insert(at, offloaded(draw))
            sc.steps.append(("tun", dt, packets))
        elif step == "send":
            spec = draw(st.sampled_from(peers))
            sc.steps.append(("send", dt, spec.peer_id,
                             draw(st.sampled_from([PING_PAYLOAD, OCC_EXIT_PAYLOAD]))))
        else:
            spec = draw(st.sampled_from(peers))
            verb = draw(st.sampled_from(["new", "new", "swap", "del"]))
            if verb == "new":
                key_ids[spec.peer_id] = (key_ids[spec.peer_id] + 1) % 8
                sc.steps.append(("new_key", dt, spec.peer_id, draw(st.integers(0, 1)),
                                 key_ids[spec.peer_id]))
            elif verb == "swap":
                sc.steps.append(("swap", dt, spec.peer_id))
            else:
                sc.steps.append(("del_key", dt, spec.peer_id, draw(st.integers(0, 1))))
    return sc


def run(factory: Any, sc: Scenario) -> Any:
    rig = Rig(factory, sc.config, sc.peers, sc.vnet_hdr, sc.ledger_start, sc.family,
              sc.no_gso)
    engine = rig.engine
    try:
        for spec in sc.peers:
            set_slot(engine, spec.peer_id, 0, 0, sc.ciphers[spec.peer_id], rig.ledger,
                     spec.peer_id * 2, is_epoch(sc.epoch_mode, 0))
        now = 1.0
        for step in sc.steps:
            kind, dt = step[0], step[1]
            now += dt
            alive = set(engine.peer_ids())
            if kind == "xsk":
                rig.xsk.deliver(step[2])
                engine.rx_xsk(0, 64, now)
            elif kind == "sock":
                for peer_id, moved, datagram in step[2]:
                    sock = (rig.float_socks if moved else rig.peer_socks)[peer_id]
                    sock.sendto(datagram, rig.address)
                engine.rx_socket(64, now)
            elif kind == "tun":
                header = bytes(10) if sc.vnet_hdr else b""
                for packet in step[2]:
                    if not isinstance(packet, Offloaded):
                        rig.tun_far.send(header + packet)
                    elif factory is NativeEngine:
                        rig.tun_far.send(packet.native)
                    else:
                        for segment in packet.python:
                            rig.tun_far.send(header + segment)
                # One call drains it all: a super-packet is one read for the native engine
                # and many for the Python one, and each call ends with the pending run sent.
                engine.tx(4096, now)
            elif kind == "send" and step[2] in alive:
                engine.send(step[2], step[3], now)
            elif kind == "new_key" and step[2] in alive:
                epoch = is_epoch(sc.epoch_mode, step[4])
                if epoch:  # a fresh ledger slot, as Ledger.allocate gives each key (2.6 keys
                    # here go on in their slot's, which keeps the high starts in play)
                    rig.ledger[step[2] * 2 + step[3]] = sc.ledger_start
                set_slot(engine, step[2], step[3], step[4], sc.ciphers[step[2]], rig.ledger,
                         step[2] * 2 + step[3], epoch)
            elif kind == "swap" and step[2] in alive:
                engine.swap_keys(step[2])
            elif kind == "del_key" and step[2] in alive:
                engine.del_key(step[2], step[3])
            rig.drain()
        return rig.finish()
    finally:
        rig.close()


def assert_same(reference: Any, native: Any) -> None:
    for name in ("tun", "sent", "events", "drops", "stats", "refilled", "key_ids", "peer_ids",
                 "ledger"):
        assert getattr(native, name) == getattr(reference, name), name


@given(sc=scenarios())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.data_too_large])
def test_native_engine_does_what_the_python_loops_do(sc: Scenario) -> None:
    native = run(NativeEngine, sc)
    assert_same(run(PythonEngine, sc), native)
    # what the scenarios reach (--hypothesis-show-statistics)
    for reason in {*native.drops, *(r for s in native.stats.values() for r in s.drops)}:
        event(f"drop: {reason}")
    for kind in {type(e).__name__ for e in native.events}:
        event(f"event: {kind}")
    event(f"TUN writes: {min(len(native.tun), 3)}+, datagrams sent: {min(len(native.sent), 3)}+")
    event(f"epoch keys: {sc.epoch_mode}")
    if sc.no_gso and len(native.sent) > 1:
        event("UDP_SEGMENT refused: datagrams sent one by one")
    if any(t[1] for t in native.tun if len(t) > 1):
        event("a GSO super-packet written")
    for step in sc.steps:
        if step[0] == "tun" and any(isinstance(p, Offloaded) for p in step[2]):
            event("TUN offloads: a super-packet or a partial checksum read")
            break


def test_the_rig_sees_everything() -> None:
    """The comparison is not vacuous: a scenario with traffic both ways shows it all."""
    remote = Remote({1: "AES-256-GCM", 2: "AES-256-GCM", 5: "AES-256-GCM"})
    run4 = [ipv4(bytes((10, 8, 0, 2)), bytes((10, 8, 0, 1)), 6, tcp(1000 + i * 1448, 0x10,
                                                                    bytes(1448)))
            for i in range(4)]
    frames = [frame_header("127.0.0.2", 40001, DST, remote.seal(1, 0, p)) for p in run4]
    frames.append(frame_header("127.0.1.3", 40002, DST, remote.seal(2, 0, PING_PAYLOAD)))
    frames.append(frame_header("127.0.0.4", 40005, DST, b"\x20hello"))
    sc = Scenario(EngineConfig(single_peer=False, replay_window=64, replay_time=15, gso=True,
                               check_source=True),
                  PEERS, dict(remote.ciphers), True, 0)
    sc.steps = [("xsk", 0.0, frames),
                ("tun", 0.0, [ipv4(bytes(4), bytes((192, 168, 2, 1)), 17, bytes(1000))] * 3),
                ("send", 0.0, 5, OCC_EXIT_PAYLOAD)]
    reference, native = run(PythonEngine, sc), run(NativeEngine, sc)
    assert_same(reference, native)
    assert len(native.tun) == 1 and native.tun[0][1] == 1  # one GSO TCPv4 super-packet
    assert [(p, w) for p, w, _ in native.sent] == [(2, 1)] * 3 + [(5, 0)]
    assert [type(e).__name__ for e in native.events] == ["PeerFloated", "ControlDatagram"]
    assert native.stats[1].rx_packets == 4 and native.refilled and native.ledger[4] > 0
    assert isinstance(FakeXsk, type)


def test_kernel_segments_reference_makes_valid_segments() -> None:
    """The Python reference for TSO reads cuts valid packets (checksums verify, lengths,
    sequence numbers and flags as Linux sets them)."""
    body = bytes(range(256)) * 12
    for v6 in (False, True):
        segment = tcp(0xFFFFFF00, 0x10 | 0x80 | 0x08 | 0x01, body)
        packet = (ipv6(bytes(15) + b"\x01", bytes(15) + b"\x02", 6, segment) if v6
                  else ipv4(bytes((10, 0, 0, 1)), bytes((10, 0, 0, 2)), 6, segment))
        segments = kernel_segments(packet, 1000)
        ip = 40 if v6 else 20
        assert len(segments) == 4
        assert b"".join(s[ip + 32 :] for s in segments) == body
        for i, seg in enumerate(segments):
            assert _tcp_checksum(seg[:ip], seg[ip:], v6) == 0
            assert v6 or checksum(seg[:20]) == 0
            assert struct.unpack_from("!I", seg, ip + 4)[0] == (0xFFFFFF00 + 1000 * i) % 2**32
            assert bool(seg[ip + 13] & 0x80) == (i == 0)  # CWR first only
            assert bool(seg[ip + 13] & 0x09) == (i == 3)  # FIN, PSH last only


def test_the_rig_sees_the_epoch_format() -> None:
    """Epoch keys in both engines, not vacuously: the peer moves to epoch 2, a late packet
    of epoch 1 still gets in once (its replay does not), the sends follow the peer to epoch
    2 (the ledger slot says so), a ping in epoch 1 from another peer."""
    remote = Remote({1: "AES-128-GCM", 2: "CHACHA20-POLY1305", 5: "AES-256-GCM"}, "all")
    inner = ipv4(bytes((10, 8, 0, 2)), bytes((10, 8, 0, 1)), 17, bytes(100))
    first = remote.seal(1, 0, inner)
    later = remote.seal(1, 0, inner, rotate=True)
    frames = [frame_header("127.0.0.2", 40001, DST, p) for p in (later, first, first)]
    frames.append(frame_header("127.0.0.3", 40002, DST, remote.seal(2, 0, PING_PAYLOAD)))
    sc = Scenario(EngineConfig(single_peer=False, replay_window=64, replay_time=15, gso=True,
                               check_source=True),
                  PEERS, dict(remote.ciphers), False, 0, epoch_mode="all")
    to_peer = ipv4(bytes((10, 8, 0, 1)), bytes((10, 8, 0, 2)), 17, bytes(500))
    sc.steps = [("xsk", 0.0, frames), ("tun", 0.0, [to_peer] * 3),
                ("send", 0.0, 5, PING_PAYLOAD)]
    reference, native = run(PythonEngine, sc), run(NativeEngine, sc)
    assert_same(reference, native)
    assert native.tun == [inner, inner]
    assert native.stats[1].drops == {"ReplayError": 1}
    to_1 = [data for peer, _, data in native.sent if peer == 1]
    assert len(to_1) == 3 and {data[4:6] for data in to_1} == {b"\x00\x02"}  # epoch 2
    assert [remote.senders[(1, 0)].decrypt(data, 0.0) for data in to_1] == [to_peer] * 3
    assert native.ledger[2] == 2 << 16 | 2 and native.ledger[10] == 1 << 16 | 1  # peers 1, 5
