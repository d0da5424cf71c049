"""Shared pieces of the tests with several XDP workers against a real openvpn client: one
client is one UDP flow, which a NIC's RSS keeps on one queue; to make both workers carry
its traffic, the client's veth maps TX queue N to CPU N (XPS), a veth delivers on the same
RX queue of the other end, and the test moves the client between CPUs 0 and 1 (`wander`).
The server's per-worker counters and drops come from its SIGUSR2 status line."""

from __future__ import annotations

import ast
import re
import subprocess
import time

from tests.support.interop import drops, status  # noqa: F401  (used as mc.status, mc.drops)


def xps(ns) -> None:
    """On ns's veth0: a packet sent from CPU N leaves on TX queue N."""
    for queue in (0, 1):
        path = f"/sys/class/net/veth0/queues/tx-{queue}/xps_cpus"
        ns.run(["sh", "-c", f"echo {1 << queue:x} > {path}"])


def pin(pid: int, cpu: int) -> None:
    subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], check=True,
                   capture_output=True)


def wander(pid: int, seconds: float) -> None:
    """Move the process between CPU 0 and 1 every quarter second."""
    end = time.monotonic() + seconds
    cpu = 0
    while time.monotonic() < end:
        pin(pid, cpu)
        cpu ^= 1
        time.sleep(0.25)


def per_worker(line: str) -> tuple[int, ...]:
    """DATA_V2 packets each worker took, from a status line."""
    return ast.literal_eval(re.search(r"worker_link_rx_packets=(\(.*?\))", line).group(1))


def iperf3_streams(net, server, seconds: int, streams: int = 4) -> subprocess.Popen:
    """iperf3 from the client to the server's tunnel address, `streams` TCP streams for
    `seconds`, started (communicate() for its output)."""
    net.server_ns.popen(["iperf3", "-s", "-1", "-B", server.tunnel_ipv4],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        if "5201" in net.server_ns.run(["ss", "-ltn"]).stdout:
            break
        time.sleep(0.1)
    return net.client_ns.popen(["iperf3", "-c", server.tunnel_ipv4, "-t", str(seconds),
                                "-P", str(streams)], stdout=subprocess.PIPE, text=True)
