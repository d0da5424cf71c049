"""Hand-built Ethernet frames for driving the classifier (no scapy needed for these few)."""

from __future__ import annotations

import ipaddress
import struct

from tests.dataplane.packets import checksum
from xdp_ovpn.proto.constants import OPCODE_SHIFT, Opcode

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x86DD, 0x8100
IP_MF = 0x2000
UDP, FRAGMENT = 17, 44
BROADCAST = b"\xff" * 6
SRC_MAC = bytes.fromhex("02000000aa01")


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header and payload with a correct checksum for either family."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    length = 8 + len(payload)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, UDP, length)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", length, UDP)
    head = struct.pack("!HHHH", sport, dport, length, 0)
    csum = checksum(pseudo + head + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, csum) + payload


def ipv4(
    src: str, dst: str, l4: bytes, options: bytes = b"", frag: int = 0, proto: int = UDP
) -> bytes:
    """IPv4 header (with options padded to 4 bytes) followed by l4; frag = flags|offset."""
    options += b"\0" * (-len(options) % 4)
    ihl = 5 + len(options) // 4
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), 0x1234, frag, 64, proto, 0,
        ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed,
    ) + options  # fmt: skip
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return head + l4


def ipv6(src: str, dst: str, l4: bytes, fragment: bool = False) -> bytes:
    nexthdr = FRAGMENT if fragment else UDP
    if fragment:  # first fragment of two: offset 0, M flag set
        l4 = struct.pack("!BBHI", UDP, 0, 1, 0xABCD) + l4
    head = struct.pack("!IHBB", 6 << 28, len(l4), nexthdr, 64)
    return head + ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed + l4


def ether(l3: bytes, dst_mac: bytes = BROADCAST, vlan: int | None = None) -> bytes:
    kind = ETH_P_IPV6 if l3[0] >> 4 == 6 else ETH_P_IP
    tag = struct.pack("!HH", ETH_P_8021Q, vlan) if vlan is not None else b""
    return dst_mac + SRC_MAC + tag + struct.pack("!H", kind) + l3


def openvpn(opcode: int, key_id: int = 0, body: bytes = bytes(40)) -> bytes:
    return bytes([opcode << OPCODE_SHIFT | key_id]) + body


def data_v2(peer_id: int, key_id: int = 0, size: int = 100) -> bytes:
    """A DATA_V2 packet of `size` bytes: header, packet-id 1, zero tag and ciphertext."""
    head = bytes([Opcode.DATA_V2 << OPCODE_SHIFT | key_id]) + peer_id.to_bytes(3, "big")
    return head + struct.pack("!I", 1) + bytes(size - 8)


def frame(
    payload: bytes,
    dst: str = "10.9.0.1",
    dport: int = 1194,
    src: str | None = None,
    sport: int = 40000,
    dst_mac: bytes = BROADCAST,
    vlan: int | None = None,
    options: bytes = b"",
    frag: int = 0,
) -> bytes:
    """An Ethernet frame carrying `payload` over UDP to dst:dport (IPv4 or IPv6 by dst)."""
    if ipaddress.ip_address(dst).version == 6:
        src = src or "fd00:9::2"
        return ether(ipv6(src, dst, udp(src, dst, sport, dport, payload), bool(frag)),
                     dst_mac, vlan)  # fmt: skip
    src = src or "10.9.0.2"
    l4 = udp(src, dst, sport, dport, payload)
    return ether(ipv4(src, dst, l4, options, frag), dst_mac, vlan)
