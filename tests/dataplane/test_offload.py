"""TcpCoalescer: in-order TCP segments of one flow become one GSO super-packet (one write);
anything else goes out alone with an all-zero virtio_net_hdr. A pipe stands in for the TUN,
so every write is read back exactly as the kernel would get it."""

from __future__ import annotations

import os
import socket
import struct

import pytest

from tests.support.packets import checksum, udp4
from xdp_ovpn.dataplane.offload import (
    GSO_TCPV4,
    GSO_TCPV6,
    NEEDS_CSUM,
    VNET_HDR,
    VNET_HDR_LEN,
    TcpCoalescer,
)
from xdp_ovpn.dataplane.peers import Peer

SRC4, DST4 = "10.8.0.2", "10.8.0.1"
SRC6, DST6 = "fd00:8::1000", "fd00:8::1"
TS = b"\x01\x01\x08\x0a" + bytes(range(8))  # NOP NOP timestamps: options GRO compares


def tcp(seq: int, payload: bytes, *, v6: bool = False, flags: int = 0x10, ack: int = 7,
        options: bytes = TS, sport: int = 40000) -> bytes:
    hdr = struct.pack("!HHIIBBHHH", sport, 5201, seq, ack, (5 + len(options) // 4) << 4, flags,
                      512, 0, 0) + options  # fmt: skip
    seg = hdr + payload
    if v6:
        s, d = socket.inet_pton(socket.AF_INET6, SRC6), socket.inet_pton(socket.AF_INET6, DST6)
        pseudo = s + d + struct.pack("!IxxxB", len(seg), 6)
        seg = seg[:16] + struct.pack("!H", checksum(pseudo + seg)) + seg[18:]
        return struct.pack("!IHBB", 6 << 28, len(seg), 6, 64) + s + d + seg
    s, d = socket.inet_aton(SRC4), socket.inet_aton(DST4)
    seg = seg[:16] + struct.pack("!H", checksum(s + d + struct.pack("!BBH", 0, 6, len(seg))
                                                + seg)) + seg[18:]  # fmt: skip
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 1, 0x4000, 64, 6, 0,
                               s, d))  # fmt: skip
    ip[10:12] = struct.pack("!H", checksum(bytes(ip)))
    return bytes(ip) + seg


def run(packets: list[bytes]) -> tuple[list[bytes], Peer, TcpCoalescer]:
    """Feed packets as one RX batch (each in its own frame, 24 bytes in); return the writes."""
    r, w = os.pipe()
    peer = Peer(1, ("10.1.0.2", 1194))
    try:
        co = TcpCoalescer(w)
        frames = [memoryview(bytearray(24) + p + bytes(16)) for p in packets]
        for frame, p in zip(frames, packets, strict=True):
            co.add(frame, 24, len(p), peer)
        co.flush()
        os.close(w)
        data = b""
        while chunk := os.read(r, 1 << 20):
            data += chunk
    finally:
        os.close(r)
    return split(data), peer, co


def split(data: bytes) -> list[bytes]:
    """Cut the pipe's byte stream back into writes (vnet header + IP length field)."""
    out = []
    while data:
        ip = data[VNET_HDR_LEN:]
        n = struct.unpack_from("!H", ip, 2)[0] if ip[0] >> 4 == 4 else 40 + struct.unpack_from(
            "!H", ip, 4)[0]  # fmt: skip
        out.append(data[: VNET_HDR_LEN + n])
        data = data[VNET_HDR_LEN + n :]
    return out


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_in_order_segments_become_one_gso_write(v6: bool) -> None:
    chunks = [bytes([i]) * 1000 for i in range(5)] + [b"tail"]
    segs = [tcp(100 + 1000 * i, c, v6=v6) for i, c in enumerate(chunks)]
    writes, peer, co = run(segs)
    assert len(writes) == 1 and co.writes == 1
    flags, gso, hdr_len, gso_size, csum_start, csum_off = VNET_HDR.unpack_from(writes[0])
    ip = writes[0][VNET_HDR_LEN:]
    iph = 40 if v6 else 20
    assert (flags, gso, gso_size, csum_start, csum_off) == (
        NEEDS_CSUM, GSO_TCPV6 if v6 else GSO_TCPV4, 1000, iph, 16)
    assert hdr_len == iph + 32
    assert ip[hdr_len:] == b"".join(chunks)
    assert ip[iph + 4 : iph + 8] == struct.pack("!I", 100)  # the first segment's seq
    if not v6:
        assert checksum(ip[:20]) == 0  # IPv4 header checksum redone for the new length
    assert peer.stats.rx_packets == 6
    assert peer.stats.rx_bytes == sum(map(len, segs))


def test_a_gap_another_flow_or_a_non_tcp_packet_break_the_run() -> None:
    a0, a1 = tcp(0, b"x" * 500), tcp(500, b"y" * 500)
    gap = tcp(5000, b"z" * 500)  # a segment was lost
    other = tcp(1000, b"w" * 500, sport=40001)
    udp = udp4(SRC4, DST4, 1, 2, b"not tcp")
    writes, peer, _ = run([a0, a1, gap, other, udp])
    assert [w[VNET_HDR_LEN:] for w in writes[1:]] == [gap, other, udp]
    assert VNET_HDR.unpack_from(writes[0])[1] == GSO_TCPV4
    for w in writes[1:]:
        assert w[:VNET_HDR_LEN] == bytes(VNET_HDR_LEN)  # alone: as it came, no offload
    assert peer.stats.rx_packets == 5


def test_psh_ends_a_run_and_a_short_segment_cannot_be_followed() -> None:
    s0, s1 = tcp(0, b"a" * 800), tcp(800, b"b" * 800, flags=0x18)  # PSH|ACK
    s2, s3 = tcp(1600, b"c" * 300), tcp(1900, b"d" * 300)  # short first: a new run each
    writes, _, _ = run([s0, s1, s2, s3])
    assert len(writes) == 2  # [s0+s1] and [s2+s3]
    first = writes[0][VNET_HDR_LEN:]
    assert first[20 + 13] & 0x08  # the super-packet carries the PSH
    assert first[52:] == b"a" * 800 + b"b" * 800


def test_different_ack_or_options_are_not_merged() -> None:
    s0 = tcp(0, b"a" * 600)
    s1 = tcp(600, b"b" * 600, ack=8)
    s2 = tcp(1200, b"c" * 600, ack=8, options=b"\x01\x01\x08\x0a" + bytes(8))
    writes, _, _ = run([s0, s1, s2])
    assert [w[VNET_HDR_LEN:] for w in writes] == [s0, s1, s2]
