"""Hand-built packets and frames for every test: IPv4/IPv6/UDP, Ethernet (VLAN-tagged if
asked), OpenVPN headers, and the scripts that send and receive in another namespace.

The checksum is the tests' own (RFC 1071), never the code's under test, so a test that
checks a checksum the data plane computed has an independent oracle.
"""

from __future__ import annotations

import ipaddress
import struct

from xdp_ovpn.proto.constants import OPCODE_SHIFT, Opcode

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q = 0x0800, 0x86DD, 0x8100
IP_MF = 0x2000
UDP, FRAGMENT = 17, 44
BROADCAST = b"\xff" * 6
SRC_MAC = bytes.fromhex("02000000aa01")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes,
        with_checksum: bool = True) -> bytes:
    """A UDP header and payload; the checksum for either family, or 0 (none: IPv4 only)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    length = 8 + len(payload)
    head = struct.pack("!HHHH", sport, dport, length, 0)
    if not with_checksum:
        return head + payload
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, UDP, length)
    else:
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", length, UDP)
    csum = checksum(pseudo + head + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, csum) + payload


def ipv4(
    src: str, dst: str, l4: bytes, options: bytes = b"", frag: int = 0, proto: int = UDP,
    ident: int = 0x1234,
) -> bytes:
    """IPv4 header (with options padded to 4 bytes) followed by l4; frag = flags|offset."""
    options += b"\0" * (-len(options) % 4)
    ihl = 5 + len(options) // 4
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), ident, frag, 64, proto, 0,
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


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv4 + UDP (UDP checksum 0: none, allowed over IPv4)."""
    return ipv4(src, dst, udp(src, dst, sport, dport, payload, with_checksum=False), ident=1)


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv6 + UDP with its mandatory checksum."""
    return ipv6(src, dst, udp(src, dst, sport, dport, payload))


def ether(l3: bytes, dst_mac: bytes = BROADCAST, vlan: int | None = None,
          src_mac: bytes = SRC_MAC) -> bytes:
    kind = ETH_P_IPV6 if l3[0] >> 4 == 6 else ETH_P_IP
    tag = struct.pack("!HH", ETH_P_8021Q, vlan) if vlan is not None else b""
    return dst_mac + src_mac + tag + struct.pack("!H", kind) + l3


def udp_payload(frame: bytes) -> tuple[int, bytes]:
    """(destination port, payload) of an Ethernet/IPv4/UDP frame."""
    assert frame[12:14] == b"\x08\x00"
    at = 14 + (frame[14] & 0x0F) * 4
    dport, length = struct.unpack_from("!2xHH", frame, at)
    return dport, frame[at + 8 : at + length]


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


# Runs in another namespace: one UDP datagram per hex line on stdin, from a fixed source port.
SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[3])))
for line in sys.stdin:
    s.sendto(bytes.fromhex(line.strip()), (sys.argv[1], int(sys.argv[2])))
"""


# Runs in another namespace: print "ready", then the hex of each datagram received on argv[1].
RECEIVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(10)
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    data, addr = s.recvfrom(4096)
    print(data.hex(), addr[0], addr[1], flush=True)
"""
