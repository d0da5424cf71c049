"""mssfix: SYNs get their MSS lowered with a still-valid TCP checksum; nothing else changes."""

from __future__ import annotations

import socket
import struct

import pytest

from tests.support.packets import checksum
from xdp_ovpn.dataplane.mss import clamp_mss, max_mss, mssfix_mss


def _syn(version: int, mss: int, flags: int = 0x02) -> bytearray:
    options = struct.pack("!BBH", 2, 4, mss) + b"\x01\x01\x04\x02"  # MSS, NOP, NOP, SACK-ok
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, 1, 0, (5 + 2) << 4, flags, 64240,
                                0, 0) + options)  # fmt: skip
    if version == 4:
        src, dst = socket.inet_aton("10.8.0.2"), socket.inet_aton("10.8.0.1")
        pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64,
                         socket.IPPROTO_TCP, 0, src, dst)  # fmt: skip
    else:
        src = socket.inet_pton(socket.AF_INET6, "fd00:8::1000")
        dst = socket.inet_pton(socket.AF_INET6, "fd00:8::1")
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), socket.IPPROTO_TCP)
        ip = struct.pack("!IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64) + src + dst
    tcp[16:18] = struct.pack("!H", checksum(pseudo + bytes(tcp)))
    return bytearray(ip) + tcp


def _valid(packet: bytearray) -> bool:
    if packet[0] >> 4 == 4:
        tcp = bytes(packet[20:])
        pseudo = packet[12:20] + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    else:
        tcp = bytes(packet[40:])
        pseudo = packet[8:40] + struct.pack("!IxxxB", len(tcp), socket.IPPROTO_TCP)
    return checksum(bytes(pseudo) + tcp) == 0


def _mss(packet: bytearray) -> int:
    tcp = 20 if packet[0] >> 4 == 4 else 40
    return struct.unpack_from("!H", packet, tcp + 22)[0]


@pytest.mark.parametrize(("version", "limit"), [(4, 1408), (6, 1388)])
def test_syn_mss_is_lowered_and_checksum_stays_valid(version: int, limit: int) -> None:
    packet = _syn(version, 1460)
    assert _valid(packet)
    assert clamp_mss(packet, 0, len(packet), 1408)
    assert _mss(packet) == limit
    assert _valid(packet)


def test_small_mss_and_non_syn_are_left_alone() -> None:
    small, ack = _syn(4, 1200), _syn(4, 1460, flags=0x10)
    for packet in (small, ack):
        before = bytes(packet)
        assert not clamp_mss(packet, 0, len(packet), 1408)
        assert bytes(packet) == before


def test_clamp_works_at_an_offset_in_a_frame() -> None:
    frame = bytearray(24) + _syn(4, 1460)
    assert clamp_mss(frame, 24, len(frame) - 24, 1000)
    assert _mss(frame[24:]) == 1000 and _valid(frame[24:])


def test_truncated_syn_is_not_read_past_its_end() -> None:
    packet = _syn(4, 1460)
    assert not clamp_mss(packet, 0, 30, 1000)  # TCP header cut short


def test_max_mss_fits_the_underlay() -> None:
    assert max_mss(1500, outer_ipv6=False) == 1500 - 20 - 8 - 24 - 20 - 20
    assert max_mss(1500, outer_ipv6=True) == max_mss(1500, outer_ipv6=False) - 20


# (mssfix, mode, tun-mtu, outer IPv6) -> IPv4 MSS, as openvpn 2.6 computes it (mss.c) for
# its settings (`openvpn --verb 4` shows mssfix, mssfix_encap, mssfix_fixed).
MSSFIX_CASES = {
    "absent: 1492 mtu": ((None, "", 1500, False), 1492 - 28 - 24 - 40),
    "absent, IPv6 underlay": ((None, "", 1500, True), 1492 - 48 - 24 - 40),
    "absent, tun-mtu 1400: 1400 fixed": ((None, "", 1400, False), 1400 - 40),
    "1400: the UDP payload": ((1400, "", 1500, False), 1400 - 24 - 40),
    "1400 mtu: the outer packet": ((1400, "mtu", 1500, False), 1400 - 28 - 24 - 40),
    "1400 fixed: the inner packet": ((1400, "fixed", 1500, False), 1400 - 40),
    "0: no clamping": ((0, "", 1400, False), 0),
}


@pytest.mark.parametrize("case", MSSFIX_CASES)
def test_mssfix_gives_openvpns_mss(case: str) -> None:
    args, mss = MSSFIX_CASES[case]
    assert mssfix_mss(*args) == mss


@pytest.mark.parametrize("case", MSSFIX_CASES)
def test_epoch_format_keys_get_4_bytes_less_unless_fixed(case: str) -> None:
    """openvpn 2.7 counts the epoch format's 8-byte packet-id (mtu.c: calc_packet_id_size_dc),
    but not in "fixed" mode, which bounds the inner packet."""
    args, mss = MSSFIX_CASES[case]
    fixed = "fixed" in case
    assert mssfix_mss(*args, epoch=True) == (mss if fixed or not mss else mss - 4)
    assert max_mss(1500, False, epoch=True) == max_mss(1500, False) - 4


def test_packets_too_short_for_a_syn_are_left_alone_without_reading_past_them() -> None:
    """The socket path slices each packet exactly: a 1..39-byte plaintext that starts like
    IPv4 or IPv6 must not raise (it did, IndexError, out of the receive loop)."""
    for first in (0x45, 0x4F, 0x60):
        for n in range(1, 40):
            packet = bytearray([first]) + bytearray(n - 1)
            assert not clamp_mss(memoryview(packet), 0, n, 1300)
            assert packet == bytearray([first]) + bytearray(n - 1)
