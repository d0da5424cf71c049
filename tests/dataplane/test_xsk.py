"""AF_XDP sockets against real veth pairs: RX through an XSKMAP, TX to a kernel UDP socket."""

from __future__ import annotations

import select
import socket

import pytest
from pyroute2 import IPRoute

from tests.support.nsfork import Sender, in_netns, popen_in
from tests.support.packets import RECEIVER, ether, udp4, udp_payload
from xdp_ovpn.dataplane.umem import XDP_PACKET_HEADROOM
from xdp_ovpn.dataplane.xsk import XskError, XskSocket, probe_afxdp

A_IP, B_IP = "10.1.0.1", "10.1.0.2"
PORT = 4789


@pytest.fixture
def pair(lab):
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, addrs=(f"{A_IP}/24", f"{B_IP}/24"))
    return a, b


def _mac(ifname: str) -> bytes:
    # Not /sys/class/net: sysfs shows the namespace it was mounted in, not the one we entered.
    with IPRoute() as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
    return bytes.fromhex(link.get_attr("IFLA_ADDRESS").replace(":", ""))


def _wait_rx(xsk: XskSocket, timeout: float = 5.0) -> tuple[list[int], list[int]]:
    while select.select([xsk], [], [], timeout)[0]:
        addrs, lens = xsk.rx_batch()
        if addrs:
            return addrs, lens
    raise AssertionError("nothing arrived on the AF_XDP socket")


def _rx_exact_bytes(b) -> tuple:
    from tests.support.xsk_redirect import redirect_udp

    payloads = [bytes(range(256)) * 4, b"x", b"\x00" * 1400]
    with redirect_udp("veth0", PORT) as prog, XskSocket("veth0") as xsk:
        prog.insert(0, xsk.fileno())
        assert xsk.fill(xsk.umem.frames()) == xsk.umem.frame_count
        # Not for PORT: must reach the kernel socket untouched (XDP_PASS).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            plain.bind((A_IP, PORT + 1))
            plain.settimeout(5)
            with (
                Sender(b.name, A_IP, PORT, 5000) as sender,
                Sender(b.name, A_IP, PORT + 1, 5001) as other,
            ):
                got = []
                for payload in payloads:
                    sender.send(payload)
                    addrs, lens = _wait_rx(xsk)
                    assert len(addrs) == 1
                    frame = xsk.frame(addrs[0], lens[0])
                    got.append(udp_payload(bytes(frame)))
                    del frame  # views must not outlive the socket
                    offset = addrs[0] % xsk.umem.frame_size
                    assert xsk.fill(addrs) == 1
                other.send(b"passed")
                passed = plain.recv(100)
        return got, passed, offset, xsk.mode, xsk.statistics().rx_dropped


def test_rx_ring_delivers_exact_udp_bytes_and_other_traffic_passes(pair):
    a, b = pair
    got, passed, offset, mode, dropped = in_netns(a.name, _rx_exact_bytes, b)
    assert got == [(PORT, bytes(range(256)) * 4), (PORT, b"x"), (PORT, b"\x00" * 1400)]
    assert passed == b"passed"
    assert mode == "copy"  # veth has no zero-copy AF_XDP
    assert offset == XDP_PACKET_HEADROOM
    assert dropped == 0


def _tx_rounds(b, rounds: int, per_round: int, tx_size: int) -> tuple:
    dst_mac = bytes.fromhex(
        b.run(["cat", "/sys/class/net/veth0/address"]).stdout.strip().replace(":", "")
    )
    receiver = popen_in(b.name, RECEIVER, 7777, rounds * per_round)
    try:
        assert receiver.stdout.readline().strip() == "ready"
        with XskSocket("veth0", tx_size=tx_size, comp_size=tx_size, frame_count=64) as xsk:
            free = xsk.umem.frames()
            sent = []
            for r in range(rounds):
                addrs, lens = [], []
                for i in range(per_round):
                    payload = f"round {r} packet {i}".encode()
                    pkt = ether(udp4(A_IP, B_IP, 5000, 7777, payload), dst_mac,
                                src_mac=_mac("veth0"))
                    addr = free.pop()
                    xsk.frame(addr, len(pkt))[:] = pkt
                    addrs.append(addr)
                    lens.append(len(pkt))
                    sent.append(payload)
                assert xsk.tx_submit(addrs, lens) == per_round
                done: list[int] = []
                while len(done) < per_round:
                    xsk.kick()
                    select.select([], [xsk], [], 1)
                    done += xsk.complete()
                assert sorted(done) == sorted(addrs)
                free += done
            stats = xsk.statistics()
        lines = [receiver.stdout.readline().split() for _ in sent]
    finally:
        receiver.kill()
        receiver.wait()
    return sent, lines, stats.tx_invalid_descs


def test_tx_frames_reach_a_udp_socket_in_the_peer_namespace(pair):
    a, b = pair
    # 5 rounds of 3 on a 4-entry TX ring: the ring indices wrap several times.
    sent, lines, invalid = in_netns(a.name, _tx_rounds, b, 5, 3, 4)
    assert [bytes.fromhex(line[0]) for line in lines] == sent
    assert all(line[1:] == [A_IP, "5000"] for line in lines)
    assert invalid == 0


def _rx_wraps_small_rings(b, count: int) -> list[bytes]:
    from tests.support.xsk_redirect import redirect_udp

    with (
        redirect_udp("veth0", PORT, mode="generic") as prog,
        XskSocket("veth0", frame_count=8, rx_size=4, fill_size=4, tx_size=0, comp_size=4) as xsk,
    ):
        prog.insert(0, xsk.fileno())
        frames = xsk.umem.frames()
        assert xsk.fill(frames) == 4  # the 4-entry fill ring takes only half
        spare = frames[4:]
        got = []
        with Sender(b.name, A_IP, PORT, 5000) as sender:
            for i in range(count):
                sender.send(f"packet {i}".encode())
                addrs, lens = _wait_rx(xsk)
                got += [
                    udp_payload(bytes(xsk.frame(x, n)))[1] for x, n in zip(addrs, lens, strict=True)
                ]
                # Refill with a different frame each time so addresses rotate too.
                spare += addrs
                assert xsk.fill([spare.pop(0) for _ in addrs]) == len(addrs)
        return got


def test_rx_only_socket_rings_wrap_around_in_generic_mode(pair):
    a, b = pair
    got = in_netns(a.name, _rx_wraps_small_rings, b, 11)
    assert got == [f"packet {i}".encode() for i in range(11)]


def _rebind() -> tuple:
    first = XskSocket("veth0")
    with pytest.raises(XskError) as busy:
        XskSocket("veth0", busy_timeout=0)
    assert first.close()
    with XskSocket("veth0") as again:  # the pool is freed asynchronously: EBUSY is retried
        mode = again.mode
    return str(busy.value), busy.value.errno, mode, again.closed


def test_rebind_right_after_close_works_and_a_held_queue_is_busy(pair):
    a, _ = pair
    busy, code, mode, closed = in_netns(a.name, _rebind)
    assert "busy" in busy and "\n" not in busy
    assert code is not None
    assert mode == "copy" and closed


def _probe() -> tuple:
    results = [probe_afxdp("veth0"), probe_afxdp("veth0")]
    errors = []
    for call in (
        lambda: probe_afxdp("nosuchdev0"),
        lambda: XskSocket("veth0", mode="zero-copy"),
        lambda: XskSocket("veth0", rx_size=1000),
        lambda: XskSocket("veth0", frame_size=1500),
        lambda: XskSocket("veth0", queue=5),
        lambda: XskSocket("veth0", rx_size=0, tx_size=0),
    ):
        try:
            call().close()
        except XskError as exc:
            errors.append(str(exc))
    return results, errors


def test_probe_reports_copy_mode_on_veth_and_errors_are_one_line(pair):
    a, _ = pair
    results, errors = in_netns(a.name, _probe)
    assert results == ["copy", "copy"]
    assert len(errors) == 6
    assert all(e and "\n" not in e for e in errors)
    assert "no interface nosuchdev0" in errors[0]
    assert "zero-copy" in errors[1]
