"""TUN offloads with IFF_VNET_HDR: receive-side coalescing of TCP segments (GRO for a TUN).

With IFF_VNET_HDR every TUN read and write starts with a `struct virtio_net_hdr`. The
ingress path uses it to hand the kernel one GSO super-packet for a run of in-order TCP
segments of one flow, written with one `writev` straight from the UMEM frames (no copy):
one syscall and one trip through the stack instead of one per segment, which is what a
NIC's GRO buys the kernel. The super-packet says NEEDS_CSUM with the pseudo-header sum in
the TCP checksum field, so a forwarded one is re-segmented with correct checksums and a
local one is not checked again (the AEAD tag already vouched for every byte).

Reads stay plain packets for the Python engine: the data plane sets TUNSETOFFLOAD(0), so the
kernel segments and checksums what it sends into the TUN itself (segmenting and
checksumming in Python costs more than the per-packet read it would save). The native
engine turns TSO back on and cuts the super-packets in C (native/offload.c).

A run merges only what Linux GRO (tcp_gro_receive) would: same addresses, ports, TOS,
ACK number and TCP options; flags ACK (PSH ends the run); sequence numbers contiguous;
every segment but the last exactly `gso_size` long.
"""

from __future__ import annotations

import fcntl
import os
import struct
from typing import Any

VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start/offset
VNET_HDR_LEN = VNET_HDR.size
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_TCPV6 = 0, 1, 4
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
IFF_VNET_HDR = 0x4000
MAX_RUN = 64  # segments per super-packet (UDP_MAX_SEGMENTS-like bound, far below GSO_MAX_SEGS)
_IFREQ = struct.Struct("16sH22x")
_ZERO_HDR = bytes(VNET_HDR_LEN)
_TCP_ACK, _TCP_PSH = 0x10, 0x08
# IPv4 (no options) + TCP: TOS, fragment word, protocol, addresses, ports, seq, ack,
# data offset, flags; the second form also takes the 12 option bytes of timestamps.
_V4 = struct.Struct("!xBxxxxHxBxx8s4sIIBB6x")
_V4TS = struct.Struct("!xBxxxxHxBxx12sIIxB6x12s")  # addresses and ports as one flow
_DOFF_TS = 8 << 4  # a 32-byte TCP header: NOP, NOP, timestamps
# IPv6 (TCP right after the fixed header) + TCP: version/class/flow, next header,
# addresses, ports, seq, ack, data offset, flags.
_V6 = struct.Struct("!I2xBx32s4sIIBB6x")
_U16 = struct.Struct("!H")
_IPV4_WORDS = struct.Struct("!10H")
_ADDR4 = struct.Struct("!4H")
_ADDR6 = struct.Struct("!16H")


def tun_has_vnet_hdr(fd: int) -> bool:
    """Whether the TUN behind fd was opened with IFF_VNET_HDR."""
    try:
        ifr = fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size))
    except OSError:
        return False
    return bool(_IFREQ.unpack(ifr)[1] & IFF_VNET_HDR)


def plain_reads(fd: int) -> None:
    """Ask for checksummed, segmented packets on read (vnet header all zero)."""
    fcntl.ioctl(fd, TUNSETOFFLOAD, 0)


def fold(total: int) -> int:
    """A sum of 16-bit words folded to 16 bits (ones' complement, before the inversion)."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


class TcpCoalescer:
    """Writes one RX batch's decrypted packets to a vnet_hdr TUN, TCP runs merged.

    `add` takes a packet at frame[start:start+n] whose VNET_HDR_LEN bytes before `start`
    are scratch; the frames must stay untouched until `flush` (the end of the batch).
    """

    def __init__(self, tun_fd: int) -> None:
        self.tun_fd = tun_fd
        self.writes = 0  # syscalls
        self.merged = 0  # segments that rode in a super-packet
        self._iov: list[memoryview] = []
        self._first: memoryview | None = None  # vnet header + first packet
        self._key: tuple | None = None
        self._peer: Any = None
        self._v6 = False
        self._hlen = 0  # IP + TCP header length
        self._mss = 0
        self._last = 0  # payload length of the last segment
        self._next_seq = 0
        self._len = 0  # IP packet length of the run

    def add(self, frame: memoryview, start: int, n: int, peer: Any) -> None:
        first_byte = frame[start]
        if first_byte == 0x45 and n > _V4TS.size and frame[start + 32] == _DOFF_TS:
            # Linux's usual segment: IPv4 without options, TCP with NOP, NOP, timestamps.
            tos, frag, proto, flow, seq, ack, flags, opts = _V4TS.unpack_from(frame, start)
            hlen = _V4TS.size if proto == 6 and not frag & 0x3FFF else 0
        else:
            tos, flow, seq, ack, flags, opts, hlen = self._headers(frame, start, n)
        if not hlen or flags & ~_TCP_PSH != _TCP_ACK or n <= hlen:
            self.flush()
            self._single(frame, start, n, peer)
            return
        plen = n - hlen
        key = (tos, flow, ack, opts, hlen, peer)
        iov = self._iov
        if (
            seq == self._next_seq
            and key == self._key
            and self._last == self._mss >= plen
            and self._len + plen <= 0xFFFF
            and len(iov) < MAX_RUN
        ):
            iov.append(frame[start + hlen : start + n])
            self._last = plen
            self._len += plen
            if flags & _TCP_PSH:  # the super-packet carries the last segment's PSH
                self._first[VNET_HDR_LEN + (40 if self._v6 else 20) + 13] |= _TCP_PSH
        else:
            self.flush()
            self._first = frame[start - VNET_HDR_LEN : start + n]
            self._iov = [self._first]
            self._key, self._peer, self._v6, self._hlen = key, peer, first_byte >> 4 == 6, hlen
            self._mss = self._last = plen
            self._len = n
        self._next_seq = (seq + plen) & 0xFFFFFFFF
        if flags & _TCP_PSH:
            self.flush()

    @staticmethod
    def _headers(frame: memoryview, start: int, n: int) -> tuple:
        """(TOS, flow, seq, ack, flags, options, IP + TCP header length) of any IPv4/IPv6
        TCP segment; header length 0 when it is something else."""
        if frame[start] == 0x45 and n >= 40:
            tos, frag, proto, addrs, ports, seq, ack, doff, flags = _V4.unpack_from(frame, start)
            if proto == 6 and not frag & 0x3FFF:
                hlen = 20 + (doff >> 4) * 4
                opts = bytes(frame[start + 40 : start + hlen])
                return tos, addrs + ports, seq, ack, flags, opts, hlen
        elif frame[start] >> 4 == 6 and n >= 60:
            vtc, nh, addrs, ports, seq, ack, doff, flags = _V6.unpack_from(frame, start)
            if nh == 6:
                hlen = 40 + (doff >> 4) * 4
                opts = bytes(frame[start + 60 : start + hlen])
                return vtc, addrs + ports, seq, ack, flags, opts, hlen
        return 0, b"", 0, 0, 0, b"", 0

    def _single(self, frame: memoryview, start: int, n: int, peer: Any) -> None:
        frame[start - VNET_HDR_LEN : start] = _ZERO_HDR
        try:
            os.write(self.tun_fd, frame[start - VNET_HDR_LEN : start + n])
        except OSError:
            peer.drop("tun write")
            return
        self.writes += 1
        peer.stats.rx_packets += 1
        peer.stats.rx_bytes += n

    def flush(self) -> None:
        """Write the pending run: as it is if it is one segment, else as a super-packet."""
        first = self._first
        if first is None:
            return
        self._first = self._key = None
        iov, peer, count = self._iov, self._peer, len(self._iov)
        if count == 1:
            first[:VNET_HDR_LEN] = _ZERO_HDR
        else:
            self._finish_header(first)
        try:
            os.writev(self.tun_fd, iov)
        except OSError:
            peer.drop("tun write")
            return
        finally:
            self._iov = []
        self.writes += 1
        if count > 1:
            self.merged += count
        stats = peer.stats
        stats.rx_packets += count
        stats.rx_bytes += self._len + (count - 1) * self._hlen

    def _finish_header(self, first: memoryview) -> None:
        """Make the first segment's headers those of the super-packet."""
        ip = VNET_HDR_LEN
        length, hlen = self._len, self._hlen
        if self._v6:
            tcp = ip + 40
            _U16.pack_into(first, ip + 4, length - 40)
            pseudo = sum(_ADDR6.unpack_from(first, ip + 8)) + (length - 40) + 6
            gso = GSO_TCPV6
        else:
            tcp = ip + 20
            _U16.pack_into(first, ip + 2, length)
            _U16.pack_into(first, ip + 10, 0)
            _U16.pack_into(first, ip + 10, ~fold(sum(_IPV4_WORDS.unpack_from(first, ip))) & 0xFFFF)
            pseudo = sum(_ADDR4.unpack_from(first, ip + 12)) + (length - 20) + 6
            gso = GSO_TCPV4
        _U16.pack_into(first, tcp + 16, fold(pseudo))
        VNET_HDR.pack_into(first, 0, NEEDS_CSUM, gso, hlen, self._mss, tcp - ip, 16)


SIOCGIFTXQLEN, SIOCSIFTXQLEN = 0x8942, 0x8943
_IFREQ_INT = struct.Struct("16si20x")


def raise_txqueuelen(fd: int, at_least: int) -> None:
    """Give the TUN behind fd a transmit ring of at least `at_least` packets.

    A TUN orphans what it queues, so TCP's small-queue limit never applies: a sender
    outpaces the reader in bursts and the 500-packet default overflows (each drop a fast
    retransmit). openvpn has --txqueuelen for the same reason.
    """
    import socket

    name = _IFREQ.unpack(fcntl.ioctl(fd, TUNGETIFF, bytes(_IFREQ.size)))[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        current = _IFREQ_INT.unpack(fcntl.ioctl(s, SIOCGIFTXQLEN, _IFREQ_INT.pack(name, 0)))[1]
        if current < at_least:
            fcntl.ioctl(s, SIOCSIFTXQLEN, _IFREQ_INT.pack(name, at_least))
