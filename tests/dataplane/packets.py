"""Hand-built IPv4/IPv6/UDP packets and Ethernet frames for the data-plane tests."""

from __future__ import annotations

import socket
import struct


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv4 + UDP (UDP checksum 0: none, allowed over IPv4)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64,
                                socket.IPPROTO_UDP, 0, socket.inet_aton(src),
                                socket.inet_aton(dst)))  # fmt: skip
    hdr[10:12] = struct.pack("!H", checksum(bytes(hdr)))
    return bytes(hdr) + udp


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """IPv6 + UDP with its mandatory checksum."""
    s6, d6 = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    length = 8 + len(payload)
    pseudo = s6 + d6 + struct.pack("!IxxxB", length, socket.IPPROTO_UDP)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    return struct.pack("!IHBB", 6 << 28, length, socket.IPPROTO_UDP, 64) + s6 + d6 + udp


def ethernet(dst_mac: bytes, src_mac: bytes, ip_packet: bytes) -> bytes:
    ethertype = b"\x86\xdd" if ip_packet[0] >> 4 == 6 else b"\x08\x00"
    return dst_mac + src_mac + ethertype + ip_packet


def udp_payload(frame: bytes) -> tuple[int, bytes]:
    """(destination port, payload) of an Ethernet/IPv4/UDP frame."""
    assert frame[12:14] == b"\x08\x00"
    udp = 14 + (frame[14] & 0x0F) * 4
    dport, length = struct.unpack_from("!2xHH", frame, udp)
    return dport, frame[udp + 8 : udp + length]


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
