"""The socket data path between two lab namespaces: TUN, DATA_V2 over UDP, keepalive."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xdp_ovpn.vm.pace import scaled

pytestmark = pytest.mark.root

PEER = str(Path(__file__).parents[1] / "support" / "socketpath_peer.py")


def _start(ns, local: str, remote: str, cidr: str, side: int, timeout: float = 0):
    args = [sys.executable, PEER, local, remote, cidr, str(side)]
    if timeout:
        args.append(str(timeout))
    proc = ns.popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _finish(proc) -> tuple[list[str], dict | None]:
    out, _ = proc.communicate("", timeout=10)
    lines = out.strip().splitlines()
    return lines[:-1], json.loads(lines[-1])


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_ping_crosses_the_tunnel_both_ways(lab, family: str) -> None:
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    if family == "ipv4":
        under = ("10.1.0.1", "10.1.0.2")
        lab.link(a, b, addrs=(f"{under[0]}/24", f"{under[1]}/24"))
        tun_a, tun_b, target_b, target_a = "10.9.0.1/24", "10.9.0.2/24", "10.9.0.2", "10.9.0.1"
    else:
        under = ("fd00:1::1", "fd00:1::2")
        lab.link(a, b, addrs=(f"{under[0]}/64", f"{under[1]}/64"))
        tun_a, tun_b, target_b, target_a = "fd09::1/64", "fd09::2/64", "fd09::2", "fd09::1"
    pa = _start(a, under[0], under[1], tun_a, 0)
    pb = _start(b, under[1], under[0], tun_b, 1)
    a.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", target_b])
    b.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", target_a])
    _, stats_a = _finish(pa)
    _, stats_b = _finish(pb)
    assert stats_a["rx_packets"] >= 6 and stats_b["rx_packets"] >= 6
    assert stats_a["tx_packets"] >= 6 and stats_b["tx_packets"] >= 6


def test_silent_peer_expires_and_keepalive_keeps_a_live_one(lab) -> None:
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, addrs=("10.1.0.1/24", "10.1.0.2/24"))
    # The timeout must outlast b's start (seconds of Python under an emulated CPU): scaled.
    timeout = scaled(1.5)
    pa = _start(a, "10.1.0.1", "10.1.0.2", "10.9.0.1/24", 0, timeout=timeout)
    pb = _start(b, "10.1.0.2", "10.1.0.1", "10.9.0.2/24", 1, timeout=timeout)
    # Both ping each other while idle: neither expires for well over the timeout.
    time.sleep(timeout * 8 / 3)
    assert not select.select([pa.stdout, pb.stdout], [], [], 0)[0], "a live peer expired"
    pb.kill()  # b goes silent without a word
    pb.wait()
    line = pa.stdout.readline().strip()
    assert line == "PeerExpired 7"
    pa.stdin.close()
    pa.wait(timeout=10)
