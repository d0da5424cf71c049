"""How much slower this CPU is than the one the lab's waits were written for.

Waits that only wait for something (a server's start, a handshake, a log line) are written
for a real CPU. In an emulated guest (qemu TCG) everything takes several times as long, so
the VM harness measures a fixed piece of work on the host and passes its time in
$XDP_OVPN_HOST_PACE; here the same work is timed again, and the ratio scales every wait.
Without that variable (on the host) the factor is 1. Behaviour under test is never scaled
by this: only how long the lab is prepared to wait for it, and the intervals of tests that
need a peer to start within them.
"""

from __future__ import annotations

import os
import time

ENV_HOST_PACE = "XDP_OVPN_HOST_PACE"  # seconds the host took for pace()'s work
ENV_SLOWDOWN = "XDP_OVPN_SLOWDOWN"  # the factor, once measured (children inherit it)
MAX_SLOWDOWN = 30.0


def pace() -> float:
    """Seconds for a fixed piece of interpreter work (the best of three)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(500_000):
            total += i * i % 7
        best = min(best, time.perf_counter() - started)
    return best


def slowdown() -> float:
    """This CPU's time over the host's for the same work (1 on the host, at most 30)."""
    if known := os.environ.get(ENV_SLOWDOWN):
        return float(known)
    host = os.environ.get(ENV_HOST_PACE)
    factor = 1.0
    if host:
        factor = min(MAX_SLOWDOWN, max(1.0, pace() / float(host)))
    os.environ[ENV_SLOWDOWN] = f"{factor:.2f}"
    return float(os.environ[ENV_SLOWDOWN])


def scaled(seconds: float) -> float:
    """A wait of `seconds` on the host, as long as it has to be on this CPU."""
    return seconds * slowdown()
