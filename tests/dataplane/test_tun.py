"""The TUN wrapper against the real kernel stack, inside lab namespaces."""

from __future__ import annotations

import os
import select
import socket
import subprocess

import pytest
from pyroute2 import IPRoute

from tests.support.nsfork import in_netns
from tests.support.packets import udp4, udp6
from xdp_ovpn.dataplane.tun import Tun, TunError

pytestmark = pytest.mark.root


def _read_packet(tun: Tun, timeout: float = 5.0) -> bytes:
    buf = bytearray(2048)
    while select.select([tun], [], [], timeout)[0]:
        n = tun.read_into(buf)
        if n:
            return bytes(buf[:n])
    raise AssertionError("no packet on the TUN")


def _ping_is_read_as_icmp() -> tuple:
    with Tun(mtu=1400) as tun:
        tun.add_address("10.77.0.1/24")
        tun.up()
        ping = subprocess.Popen(
            ["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.77.0.2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while True:  # skip anything else the stack may send (none expected on a /24)
                pkt = _read_packet(tun)
                if pkt[0] >> 4 == 4 and pkt[9] == socket.IPPROTO_ICMP:
                    break
        finally:
            ping.kill()
            ping.wait()
        return tun.name, socket.inet_ntoa(pkt[12:16]), socket.inet_ntoa(pkt[16:20]), pkt[20]


def test_ping_through_tun_is_read_as_icmp_echo(lab):
    ns = lab.add_namespace("t")
    name, src, dst, icmp_type = in_netns(ns.name, _ping_is_read_as_icmp)
    assert name.startswith("tun")
    assert (src, dst, icmp_type) == ("10.77.0.1", "10.77.0.2", 8)


def _written_packets_reach_sockets() -> tuple[bytes, bytes]:
    with Tun() as tun:
        tun.add_address("10.77.0.1/24")
        tun.add_address("fd77::1/64")
        tun.up()
        got = []
        for family, host, peer, build in (
            (socket.AF_INET, "10.77.0.1", "10.77.0.2", udp4),
            (socket.AF_INET6, "fd77::1", "fd77::2", udp6),
        ):
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.bind((host, 5555))
                sock.settimeout(5)
                payload = f"hello over {family.name}".encode()
                packet = build(peer, host, 4444, 5555, payload)
                assert tun.write(packet) == len(packet)
                data, addr = sock.recvfrom(2048)
                assert addr[:2] == (peer, 4444)
                got.append(data)
        return tuple(got)


def test_written_packet_is_delivered_by_kernel_stack(lab):
    ns = lab.add_namespace("t")
    v4, v6 = in_netns(ns.name, _written_packets_reach_sockets)
    assert v4 == b"hello over AF_INET"
    assert v6 == b"hello over AF_INET6"


def _close_leaves_nothing() -> tuple:
    tun = Tun("xotest%d", mtu=1300, multi_queue=True)
    extra = tun.add_queue()
    held = os.dup(tun.fileno())  # as if a forked worker still held a queue
    tun.add_address("10.78.0.1/24")
    tun.up()
    tun.add_route("10.79.0.0/16")
    tun.add_route("fd79::/48")
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=tun.name)[0]
        mtu = ipr.get_links(idx)[0].get_attr("IFLA_MTU")
        routes_before = len(ipr.get_routes(oif=idx, family=socket.AF_INET))
        tun.close()
        os.close(held)
        gone = ipr.link_lookup(ifname=tun.name) == []
        routes = [r.get_attr("RTA_DST") for r in ipr.get_routes(family=socket.AF_INET)]
    return tun.name, extra != tun.queues, mtu, routes_before, gone, routes, tun.closed


def test_close_removes_device_and_routes_even_with_queue_held(lab):
    ns = lab.add_namespace("t")
    name, _, mtu, routes_before, gone, routes, closed = in_netns(ns.name, _close_leaves_nothing)
    assert name.startswith("xotest")
    assert mtu == 1300
    assert routes_before >= 2  # the connected /24 and 10.79/16
    assert gone and closed
    assert "10.79.0.0" not in routes


def _errors() -> list[str]:
    reasons = []
    for attempt in (
        lambda: Tun("x" * 20),
        lambda: Tun(mtu=10),
    ):
        try:
            attempt()
        except TunError as exc:
            reasons.append(str(exc))
    with Tun() as tun:
        for attempt in (
            lambda: tun.add_address("10.0.0.300/24"),
            lambda: tun.add_route("nowhere"),
            lambda: tun.add_route("10.80.0.0/16", via="10.81.0.1"),  # gateway unreachable
            tun.add_queue,  # not multi-queue
        ):
            try:
                attempt()
            except TunError as exc:
                reasons.append(str(exc))
    try:
        tun.read_into(bytearray(10))
    except TunError as exc:
        reasons.append(str(exc))
    return reasons


def test_bad_requests_raise_one_line_tun_errors(lab):
    ns = lab.add_namespace("t")
    reasons = in_netns(ns.name, _errors)
    assert len(reasons) == 7
    assert all(r and "\n" not in r for r in reasons)
    assert "longer than 15" in reasons[0]
    assert "MTU 10" in reasons[1]


def _vnet_hdr_reads_carry_header() -> tuple[int, int]:
    with Tun(vnet_hdr=True) as tun:
        tun.add_address("10.77.0.1/24")
        tun.up()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"x" * 100, ("10.77.0.2", 9))
        pkt = _read_packet(tun)
        while pkt[10] >> 4 != 4:  # skip IPv6 router solicitations and MLD reports
            pkt = _read_packet(tun)
        return len(pkt), pkt[10 + 9]


def test_vnet_hdr_reads_start_with_virtio_header(lab):
    ns = lab.add_namespace("t")
    length, proto = in_netns(ns.name, _vnet_hdr_reads_carry_header)
    assert proto == socket.IPPROTO_UDP  # the IP header starts after the 10-byte virtio_net_hdr
    assert length == 10 + 20 + 8 + 100
