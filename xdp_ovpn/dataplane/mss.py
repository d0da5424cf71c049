"""TCP MSS clamping, openvpn's `mssfix` (mss.c), done by the data plane on both paths.

A TCP SYN carries the largest segment its sender accepts. Lowering it in both directions
keeps every tunnelled segment small enough that its DATA_V2 datagram fits the underlay
MTU: nothing is fragmented, so every packet can take the XDP fast path (XDP passes IP
fragments up to the socket).

Only SYNs are rewritten, and the caller only looks at short packets (a SYN is at most 60
bytes of IP header + 60 of TCP), so bulk data pays one length comparison.
"""

from __future__ import annotations

import socket
import struct

from xdp_ovpn.dataplane.offload import fold
from xdp_ovpn.proto.constants import DATA_V2_EPOCH_OVERHEAD, DATA_V2_HEADER_LEN

SYN_MAX_LEN = 128  # longer packets are never SYNs worth reading (IPv6 40 + TCP 60 < 128)
_U16 = struct.Struct("!H")
_TCP_SYN = 0x02
_OPT_END, _OPT_NOP, _OPT_MSS = 0, 1, 2
_IPV4_HLEN, _IPV6_HLEN, _TCP_HLEN, _UDP_HLEN = 20, 40, 20, 8


MSSFIX_DEFAULT = 1492  # openvpn 2.6's, in "mtu" mode, when tun-mtu is the default
TUN_MTU_DEFAULT = 1500


def mss_for(overhead: int, mss: int, mss_epoch: int | None) -> int:
    """The MSS for a key whose packets add `overhead` bytes: `mss` for the 2.6 format,
    `mss_epoch` (None: mss) for the epoch format."""
    return mss if overhead == DATA_V2_HEADER_LEN or mss_epoch is None else mss_epoch


def max_mss(link_mtu: int, outer_ipv6: bool, epoch: bool = False) -> int:
    """The MSS of an IPv4 TCP connection whose tunnelled segments fit link_mtu exactly."""
    return mssfix_mss(link_mtu, "mtu", TUN_MTU_DEFAULT, outer_ipv6, epoch)


def mssfix_mss(mssfix: int | None, mode: str, tun_mtu: int, outer_ipv6: bool,
               epoch: bool = False) -> int:
    """The IPv4 MSS that openvpn's `mssfix` clamps SYNs to; 0: no clamping.

    `mssfix N` bounds the UDP payload (the DATA_V2 packet), `mssfix N mtu` the outer IP
    packet, `mssfix N fixed` the inner IP packet. Absent (None): `1492 mtu`, or
    `tun-mtu fixed` when tun-mtu is not 1500 (openvpn's defaults). With `epoch` for keys
    in 2.7's epoch format, whose packets are 4 bytes longer (mtu.c: calc_packet_id_size_dc).
    """
    if mssfix is None:
        mssfix, mode = ((MSSFIX_DEFAULT, "mtu") if tun_mtu == TUN_MTU_DEFAULT
                        else (tun_mtu, "fixed"))
    if mssfix == 0:
        return 0
    overhead = _IPV4_HLEN + _TCP_HLEN  # of the inner packet, as openvpn counts it
    if mode != "fixed":
        overhead += DATA_V2_EPOCH_OVERHEAD if epoch else DATA_V2_HEADER_LEN
    if mode == "mtu":
        overhead += (_IPV6_HLEN if outer_ipv6 else _IPV4_HLEN) + _UDP_HLEN
    return mssfix - overhead


def clamp_mss(buf: bytearray | memoryview, start: int, length: int, mss_v4: int) -> bool:
    """Lower the MSS option of a TCP SYN in the IP packet at buf[start:start+length].

    `mss_v4` is the limit for IPv4; IPv6 packets get 20 bytes less (their bigger header).
    Fixes the TCP checksum incrementally (RFC 1624). True if the packet changed.
    """
    end = start + length
    if length < _IPV4_HLEN + _TCP_HLEN:  # no SYN; and never read past the packet
        return False
    version = buf[start] >> 4
    if version == 4:
        if buf[start + 9] != socket.IPPROTO_TCP or _U16.unpack_from(buf, start + 6)[0] & 0x1FFF:
            return False
        tcp = start + (buf[start] & 0x0F) * 4
        limit = mss_v4
    elif version == 6:
        if buf[start + 6] != socket.IPPROTO_TCP:
            return False
        tcp = start + _IPV6_HLEN
        limit = mss_v4 - (_IPV6_HLEN - _IPV4_HLEN)
    else:
        return False
    if tcp + _TCP_HLEN > end or not buf[tcp + 13] & _TCP_SYN:
        return False
    options_end = min(tcp + (buf[tcp + 12] >> 4) * 4, end)
    i = tcp + _TCP_HLEN
    while i + 1 < options_end:
        kind = buf[i]
        if kind == _OPT_END:
            return False
        if kind == _OPT_NOP:
            i += 1
            continue
        size = buf[i + 1]
        if size < 2:
            return False
        if kind == _OPT_MSS and size == 4 and i + 4 <= options_end:
            mss = _U16.unpack_from(buf, i + 2)[0]
            if mss <= limit:
                return False
            _U16.pack_into(buf, i + 2, limit)
            _fix_checksum(buf, tcp + 16, mss, limit)
            return True
        i += size
    return False


def _fix_checksum(buf: bytearray | memoryview, at: int, old: int, new: int) -> None:
    """HC' = ~(~HC + ~m + m') for one 16-bit word m -> m' (RFC 1624, eqn. 3)."""
    total = (~_U16.unpack_from(buf, at)[0] & 0xFFFF) + (~old & 0xFFFF) + new
    _U16.pack_into(buf, at, ~fold(total) & 0xFFFF)
