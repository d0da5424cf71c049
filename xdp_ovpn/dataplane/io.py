"""The XDP data path's packet loops (ovpn's io.c): `Ingress` and `Egress`.

Ingress: AF_XDP RX ring → DATA_V2 decrypted in place in the UMEM → TUN.
Egress: TUN → peer lookup → DATA_V2 encrypted straight into a GSO buffer → UDP
socket, equal-size runs to one peer sent as one UDP_SEGMENT `sendmsg` (AF_XDP TX
in copy mode costs the machine twice the CPU a packet on veth, docs/benchmarks.md,
and the socket needs no neighbour resolution).

XDP steers unfragmented UDP DATA_V2 for known peer-ids into the socket, so a frame
is Ethernet + IPv4/IPv6 + UDP + DATA_V2. Everything is re-checked here anyway (a
BPF map can lag the peer table by a command): a frame that is not what it should
be is a counted drop, never an exception out of the loop.

Per batch: one `rx_batch`, one clock read, one `fill`. Per packet: one
`unpack_from` of the headers, one `decrypt_frame` in place (the plaintext lands 24
bytes into the payload; the frame's spare tail holds the moved tag), and one TUN
write, or, with a vnet_hdr TUN, a share of one `writev` per TCP run (offload.py).
Nothing is copied out of the UMEM but the outer source address (4 or 16 bytes, to
spot a float) and, on a server, the inner one (peers.py: `owns_source`). Short packets
are looked at for pings, OCC exit and SYNs (mss.py).
"""

from __future__ import annotations

import contextlib
import errno
import io
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable

from xdp_ovpn.dataplane.api import (
    Address,
    KeyNeedsRenewal,
    Notification,
    PeerExpired,
    PeerFloated,
)
from xdp_ovpn.dataplane.mss import SYN_MAX_LEN, clamp_mss, mss_for
from xdp_ovpn.dataplane.offload import VNET_HDR_LEN, TcpCoalescer
from xdp_ovpn.dataplane.peers import Peer, PeerTable
from xdp_ovpn.dataplane.xsk import XskSocket
from xdp_ovpn.proto.constants import (
    AEAD_TAG_LEN,
    DATA_V2_HEADER_LEN,
    KEY_ID_MASK,
    OCC_EXIT_PAYLOAD,
    OPCODE_SHIFT,
    PING_PAYLOAD,
    Opcode,
)
from xdp_ovpn.proto.datachannel import DataChannelCrypto
from xdp_ovpn.proto.epoch import EpochDataChannel
from xdp_ovpn.proto.errors import ProtocolError, drop_reason

ETH_HLEN = 14
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPV6_HLEN = 40
UDP_HLEN = 8

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_UDP = struct.Struct("!H2xH")  # source port, (destination port), length
_UDP_P = socket.IPPROTO_UDP
# From the ethertype (frame offset 12) to the first DATA_V2 word, IPv4 without options:
# ethertype, version/IHL, fragment word, protocol, source, source port, UDP length, word.
_FAST4 = struct.Struct("!HBxxxxxHxBxx4s4xHxxHxxI")
_FAST4_PAYLOAD = ETH_HLEN + 20 + UDP_HLEN
# The same for IPv6: ethertype, next header, source, source port, UDP length, word.
_FAST6 = struct.Struct("!H6xBx16s16xHxxHxxI")
_FAST6_PAYLOAD = ETH_HLEN + IPV6_HLEN + UDP_HLEN
_DATA_V2 = int(Opcode.DATA_V2)
_PING_LEN = len(PING_PAYLOAD)
_EXIT_LEN = len(OCC_EXIT_PAYLOAD)

# Called with (DATA_V2-or-other payload bytes, source address) for packets to hand up.
ControlHandler = Callable[[bytes, Address], None]
# A key slot in either data format: the 2.6 one (plaintext 24 bytes into a packet, the tag
# before it) or 2.7's epoch format (12 bytes in, the tag after it); both say where
# (`plaintext_offset`) and how long their framing is (`overhead`).
DataCrypto = DataChannelCrypto | EpochDataChannel


class Ingress:
    """Drains one AF_XDP socket into one TUN for the peers of one PeerTable."""

    def __init__(
        self,
        xsk: XskSocket,
        tun_fd: int,
        peers: PeerTable,
        notify: Callable[[Notification], None],
        *,
        on_control: ControlHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        mapped_v4: bool = False,
        mss: int = 0,
        mss_epoch: int | None = None,
    ) -> None:
        self.xsk = xsk
        self.tun_fd = tun_fd
        self.peers = peers
        self.notify = notify
        self.on_control = on_control
        self.clock = clock
        self.umem = xsk.umem.view
        self._chunk_mask = ~(xsk.umem.frame_size - 1)
        self._chunk_size = xsk.umem.frame_size
        self.drops: dict[str, int] = {}  # drops not attributable to a peer
        # An IPv6 socket sends to IPv4 peers by their IPv4-mapped address: report those.
        self.mapped_v4 = mapped_v4
        # Clamp SYNs to this IPv4 MSS (mss.py), mss_epoch for epoch-format keys; 0: leave
        # them alone.
        self.mss, self.mss_epoch = mss, mss_epoch
        self.coalescer: TcpCoalescer | None = None
        # peer-id -> (packed source address, port) of the peer's remote, for float checks.
        self._remote_keys: dict[int, tuple[bytes, int]] = {}

    def poll(self, max_n: int = 64) -> int:
        """Handle one batch from the RX ring; return how many frames it held.

        One loop over the batch. What a packet resolves to (peer and key from the
        DATA_V2 word, the peer's cached source) is kept for the next packet, which in a
        batch is nearly always from the same peer with the same key.
        """
        addrs, lens = self.xsk.rx_batch(max_n)
        if not addrs:
            return 0
        now = self.clock()
        umem, chunk_mask, chunk_size = self.umem, self._chunk_mask, self._chunk_size
        unpack4, unpack6 = _FAST4.unpack_from, _FAST6.unpack_from
        coalesce = self.coalescer.add if self.coalescer is not None else None
        owns_source = self.peers.owns_source
        last_word = -1  # the DATA_V2 word the cached peer and crypto belong to
        peer = crypto = stats = None
        off = DATA_V2_HEADER_LEN  # where the cached crypto leaves the plaintext
        mss = self.mss  # the cached crypto's
        remote: tuple[bytes, int] | None = None
        for addr, length in zip(addrs, lens, strict=True):
            # -- Ethernet, IP, UDP, the DATA_V2 word: one unpack for the usual frame ----
            payload = 0
            if length >= _FAST6.size + 12:
                ethertype, vihl, frag, proto, src, sport, ulen, word = unpack4(umem, addr + 12)
                if ethertype == ETH_P_IP and vihl == 0x45 and proto == _UDP_P and not frag & 0x3FFF:
                    payload = addr + _FAST4_PAYLOAD
                elif ethertype == ETH_P_IPV6:
                    _, proto, src, sport, ulen, word = unpack6(umem, addr + 12)
                    if proto == _UDP_P:
                        payload = addr + _FAST6_PAYLOAD
            if not payload:  # IP options, a short frame, or not UDP: the careful way
                parsed = self._parse(addr, length)
                if parsed is None:
                    continue
                payload, src, sport, ulen, word = parsed
            plen = ulen - UDP_HLEN
            if plen < 4 or payload + plen > addr + length:  # ulen also trims Ethernet padding
                self._count("bad UDP length")
                continue
            # -- DATA_V2: peer and key ------------------------------------------------
            if word != last_word:
                if word >> (24 + OPCODE_SHIFT) != _DATA_V2:
                    self._hand_up(payload, plen, src, sport)
                    continue
                peer, crypto = self._resolve(word)
                if crypto is None:
                    last_word = -1
                    continue
                last_word, stats = word, peer.stats
                remote = self._remote_keys.get(peer.peer_id)
                off = crypto.plaintext_offset
                mss = mss_for(crypto.overhead, self.mss, self.mss_epoch)
            # -- decrypt in place (replay window inside), up to the end of the chunk --
            frame = umem[payload : (addr & chunk_mask) + chunk_size]
            try:
                n = crypto.decrypt_frame(frame, plen, now)
            except ProtocolError as exc:
                peer.drop(drop_reason(exc))
                continue
            stats.link_rx_packets += 1
            stats.link_rx_bytes += plen
            peer.last_rx = now
            if remote is None or src != remote[0] or sport != remote[1]:
                remote = self._check_float(peer, src, sport)
            # -- deliver ---------------------------------------------------------------
            if n < SYN_MAX_LEN and self._short(peer, frame, off, n, mss):
                last_word = -1  # the peer is gone
                continue
            if not owns_source(peer, frame, off, n):  # counted there
                continue
            if coalesce is not None:  # counts rx (or the drop) when it writes
                coalesce(frame, off, n, peer)
                continue
            try:
                os.write(self.tun_fd, frame[off : off + n])
            except OSError:
                peer.drop("tun write")
                continue
            stats.rx_packets += 1
            stats.rx_bytes += n
        if coalesce is not None:
            self.coalescer.flush()  # before the frames go back to the kernel
        self.xsk.fill(addrs)
        return len(addrs)

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _resolve(self, word: int) -> tuple[Peer | None, DataCrypto | None]:
        """The peer and key slot a DATA_V2 word names; (peer or None, None) is counted."""
        peer = self.peers.by_id(word & 0xFFFFFF)
        if peer is None and self.peers.single:
            peer = next(iter(self.peers), None)
        if peer is None:
            self._count("unknown peer-id")
            return None, None
        key_id = (word >> 24) & KEY_ID_MASK
        for crypto in peer.keys:
            if crypto is not None and crypto.key_id == key_id:
                return peer, crypto
        peer.drop("no key")
        return peer, None

    def _short(self, peer: Peer, frame: memoryview, off: int, n: int, mss: int) -> bool:
        """Pings, OCC exit and SYNs are short: consume the first two (True), clamp SYNs."""
        plain = frame[off : off + n]
        if n == _PING_LEN and plain == PING_PAYLOAD:
            return True
        if n == _EXIT_LEN and plain == OCC_EXIT_PAYLOAD:
            self.peers.remove(peer.peer_id)
            self._remote_keys.pop(peer.peer_id, None)
            self.notify(PeerExpired(peer.peer_id, "exit"))
            return True
        if mss:
            clamp_mss(frame, off, n, mss)
        return False

    def _check_float(self, peer: Peer, src: bytes, sport: int) -> tuple[bytes, int]:
        """An authenticated packet from a source other than the cached one."""
        known = _remote_key(peer.remote)
        if known != (src, sport):
            new_remote = (self._address(src), sport)
            self.peers.update(peer.peer_id, remote=new_remote)
            self.notify(PeerFloated(peer.peer_id, new_remote))
        self._remote_keys[peer.peer_id] = remote = (src, sport)
        return remote

    def _parse(self, addr: int, length: int) -> tuple[int, bytes, int, int, int] | None:
        """(payload offset, source address, source port, UDP length, first payload word) of
        any Ethernet/IP/UDP frame, or None (counted)."""
        umem = self.umem
        end = addr + length
        if length < ETH_HLEN + 20 + UDP_HLEN:
            return self._count("short frame")
        ethertype = _U16.unpack_from(umem, addr + 12)[0]
        l3 = addr + ETH_HLEN
        if ethertype == ETH_P_IP:
            vihl = umem[l3]
            l4 = l3 + (vihl & 0x0F) * 4
            if vihl >> 4 != 4 or l4 - l3 < 20 or umem[l3 + 9] != _UDP_P:
                return self._count("not UDP")
            if _U16.unpack_from(umem, l3 + 6)[0] & 0x3FFF:
                return self._count("IP fragment")
            src = bytes(umem[l3 + 12 : l3 + 16])
        elif ethertype == ETH_P_IPV6:
            l4 = l3 + IPV6_HLEN
            if umem[l3 + 6] != _UDP_P:  # extension headers: XDP passes those up
                return self._count("not UDP")
            src = bytes(umem[l3 + 8 : l3 + 24])
        else:
            return self._count("not IP")
        if l4 + UDP_HLEN + 4 > end:
            return self._count("short frame")
        sport, ulen = _UDP.unpack_from(umem, l4)
        return l4 + UDP_HLEN, src, sport, ulen, _U32.unpack_from(umem, l4 + UDP_HLEN)[0]

    def _hand_up(self, payload: int, plen: int, src: bytes, sport: int) -> None:
        """Not DATA_V2 (the classifier should not send these): give it to the control plane."""
        if self.on_control is None:
            return self._count("not DATA_V2")
        with contextlib.suppress(Exception):  # a broken handler must not stop the data path
            self.on_control(bytes(self.umem[payload : payload + plen]), (self._address(src), sport))
        return None

    def _address(self, packed: bytes) -> str:
        if len(packed) == 16:
            return socket.inet_ntop(socket.AF_INET6, packed)
        text = socket.inet_ntop(socket.AF_INET, packed)
        return "::ffff:" + text if self.mapped_v4 else text

    def set_tun(self, tun_fd: int, vnet_hdr: bool) -> None:
        """Write to this TUN; with vnet_hdr, TCP runs of a batch go as GSO super-packets."""
        self.tun_fd = tun_fd
        self.coalescer = TcpCoalescer(tun_fd) if vnet_hdr else None

    def forget_peer(self, peer_id: int) -> None:
        """Drop cached state of a peer the control plane removed or moved."""
        self._remote_keys.pop(peer_id, None)


def _remote_key(remote: Address) -> tuple[bytes, int] | None:
    """A remote as (packed address, port); IPv4-mapped IPv6 counts as IPv4."""
    try:
        ip = ipaddress.ip_address(remote[0])
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.packed, remote[1]


UDP_SEGMENT = 103  # linux/udp.h: setsockopt/cmsg level SOL_UDP
GSO_MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS on kernels before 6.9
GSO_MAX_BYTES = 65000  # below the 65507-byte UDP payload limit
_GSO_SIZE = struct.Struct("=H")
_GSO_REFUSED = (errno.EIO, errno.EINVAL, errno.EMSGSIZE)
_MAX_IP = 65535


class Egress:
    """Drains one TUN into DATA_V2 datagrams on the UDP socket, GSO-batched per peer.

    Each packet is read straight into the GSO buffer, 24 bytes after the end of the
    pending run, so it is never copied: when the run is sent, one `seal_run` encrypts
    every packet of it in place and one `sendmsg` hands it to the kernel.
    """

    def __init__(
        self,
        tun_fd: int,
        sock: socket.socket,
        peers: PeerTable,
        notify: Callable[[Notification], None],
        *,
        batch: int = GSO_MAX_SEGMENTS,
        clock: Callable[[], float] = time.monotonic,
        mss: int = 0,
        mss_epoch: int | None = None,
        vnet_hdr: bool = False,
        reader: Callable[[memoryview], int | None] | None = None,
    ) -> None:
        self.tun_fd = tun_fd
        self.sock = sock
        # vnet_hdr TUN with offloads off: each read is a zero header, then the packet; the
        # header is read into the packet's own DATA_V2 header slot and overwritten there.
        self._skip = VNET_HDR_LEN if vnet_hdr else 0
        # `reader` stands in for the TUN read in benchmarks (bench/perpacket.py).
        self._readinto = reader or io.FileIO(tun_fd, "r", closefd=False).readinto
        # Clamp SYNs to this IPv4 MSS (mss.py), mss_epoch for epoch-format keys; 0: leave
        # them alone.
        self.mss, self.mss_epoch = mss, mss_epoch
        self.peers = peers
        self.notify = notify
        self.batch = batch
        self.clock = clock
        self.gso = True  # cleared for good when the route refuses UDP_SEGMENT
        self.gso_max_seg = _MAX_IP  # lowered when segments exceed the path MTU
        # A full run, then room for a whole read (never truncate, whatever the TUN's MTU).
        self._out = memoryview(
            bytearray(GSO_MAX_BYTES + DATA_V2_HEADER_LEN + _MAX_IP + AEAD_TAG_LEN)
        )
        self._run_peer: Peer | None = None
        self._run_crypto: DataCrypto | None = None
        self._run_seg = 0  # wire size of every segment but the last
        self._run_len = 0  # bytes in _out
        self._run_count = 0
        # Where the next packet's plaintext is read to, after the run's end: its key's
        # plaintext_offset (the last run's, which the next packet nearly always shares).
        self._head = DATA_V2_HEADER_LEN
        self.renewing: set[tuple[int, int]] = set()  # (peer-id, key-id) reported exhausted
        self.drops: dict[str, int] = {}  # drops not attributable to a peer
        self.sends = 0  # sendmsg calls, to see the batching work

    def poll(self) -> int:
        """Read up to `batch` packets from the TUN and send them; return how many were read."""
        out, readinto, skip = self._out, self._readinto, self._skip
        now = self.clock()
        count = 0
        # Client and p2p: the one peer takes everything (verbs run between polls only).
        only = next(iter(self.peers), None) if self.peers.single else None
        while count < self.batch:
            pos = self._run_len + self._head  # where the plaintext lands
            try:
                n = readinto(out[pos - skip : pos + _MAX_IP])
            except InterruptedError:
                break
            except OSError:
                self._count("tun read")
                break
            if n is None:  # EAGAIN
                break
            n -= skip
            count += 1
            if n <= 0:
                self._count("not IP")
                continue
            version = out[pos] >> 4
            if only is not None and version in (4, 6):
                self._add(only, pos, n, now)
                continue
            peer = self._route(out, pos, n, version)
            if peer is not None:
                self._add(peer, pos, n, now)
        self.flush(now)
        return count

    def _count(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _route(self, buf: memoryview, pos: int, n: int, version: int) -> Peer | None:
        if version == 4 and n >= 20:
            peer = self.peers.by_destination(bytes(buf[pos + 16 : pos + 20]))
        elif version == 6 and n >= 40:
            peer = self.peers.by_destination(bytes(buf[pos + 24 : pos + 40]))
        else:
            self._count("not IP")
            return None
        if peer is None:
            self._count("no route to peer")
        return peer

    def _add(self, peer: Peer, pos: int, n: int, now: float) -> None:
        """Make the packet read at `pos` part of the run, sending the run first if it
        cannot take it (the packet then moves to the front of the buffer)."""
        crypto = peer.keys[0]  # KeySlot.PRIMARY, without the enum lookup a packet
        if crypto is None:
            peer.drop("no key")
            return
        if n < SYN_MAX_LEN and (mss := mss_for(crypto.overhead, self.mss, self.mss_epoch)):
            clamp_mss(self._out, pos, n, mss)  # the MSS of the key's data format
        wire = n + crypto.overhead
        run_len = self._run_len
        if run_len and (
            crypto is not self._run_crypto
            or wire > self._run_seg
            or run_len + wire > GSO_MAX_BYTES
            or self._run_count >= GSO_MAX_SEGMENTS
        ):
            self.flush(now)  # a 2.6 run's last tag spills into this packet's header slot only
            run_len = 0
        head = crypto.plaintext_offset
        if run_len + head != pos:  # after a flush, or read for the other data format
            self._out[run_len + head : run_len + head + n] = self._out[pos : pos + n]
        if not run_len:
            self._run_peer, self._run_crypto, self._run_seg = peer, crypto, wire
            self._head = head
            self._check_renewal(peer, crypto)  # once a run is plenty: 2^32 ids, 64 a run
        self._run_len = run_len + wire
        self._run_count += 1
        if wire < self._run_seg:
            self.flush(now)  # a short segment can only be the last one of a run

    def _check_renewal(self, peer: Peer, crypto: DataCrypto) -> None:
        if crypto.needs_renegotiation and (peer.peer_id, crypto.key_id) not in self.renewing:
            self.renewing.add((peer.peer_id, crypto.key_id))
            self.notify(KeyNeedsRenewal(peer.peer_id, crypto.key_id))

    def flush(self, now: float) -> None:
        """Encrypt the pending run in place and send it: one sendmsg with UDP_SEGMENT, or
        one datagram."""
        length, seg, count = self._run_len, self._run_seg, self._run_count
        peer, crypto = self._run_peer, self._run_crypto
        if not length or peer is None or crypto is None:  # nothing pending
            return
        self._run_len = self._run_count = 0
        self._run_peer = self._run_crypto = None
        overhead = crypto.overhead
        try:
            crypto.seal_run(self._out, seg, count, length - (count - 1) * seg - overhead, now)
        except ProtocolError as exc:
            for _ in range(count):
                peer.drop(drop_reason(exc))
            return
        stats = peer.stats
        stats.tx_packets += count
        stats.tx_bytes += length - count * overhead
        peer.last_tx = now
        self._send(self._out[:length], seg, peer)

    def _send(self, data: memoryview, seg: int, peer: Peer) -> None:
        length = len(data)
        try:
            if length == seg:
                self.sock.sendto(data, peer.remote)
            elif self.gso and seg <= self.gso_max_seg:
                cmsg = [(socket.SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(seg))]
                self.sock.sendmsg([data], cmsg, 0, peer.remote)
            else:
                for off in range(0, length, seg):
                    self.sock.sendto(data[off : off + seg], peer.remote)
        except OSError as exc:
            if self.gso and length != seg and exc.errno in _GSO_REFUSED:
                if exc.errno == errno.EMSGSIZE:  # above the path MTU: only single datagrams
                    self.gso_max_seg = seg - 1  # get fragmented by the kernel
                else:  # EIO/EINVAL: no checksum offload on this route, for good
                    self.gso = False
                return self._send(data, seg, peer)
            peer.drop(f"send {errno.errorcode.get(exc.errno, exc.errno)}")
            return None
        self.sends += 1
        peer.stats.link_tx_packets += -(-length // seg)
        peer.stats.link_tx_bytes += length
        return None
