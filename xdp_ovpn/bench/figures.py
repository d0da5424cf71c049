"""The figures a run reports: key, label, unit, and which way is better.

`question` groups figures into one chart and one table section each.
"""

from __future__ import annotations

from dataclasses import dataclass

# "machine": every CPU's busy time (/proc/stat), softirq included, over the same test.
CPU_ROLES = ("server", "client", "iperf3-server", "iperf3-client", "machine")


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    better: str  # "higher" or "lower"
    question: str
    ratios: bool = False  # also report value / userspace and value / bare link


def _tcp(direction: str, streams: int) -> Figure:
    arrow = "client→server" if direction == "up" else "server→client"
    label = f"TCP {arrow}, {streams} stream{'s' if streams > 1 else ''}"
    return Figure(f"tcp_{direction}_{streams}", label, "Mbit/s", "higher", "tcp", ratios=True)


FIGURES: tuple[Figure, ...] = (
    *(_tcp(d, n) for d in ("up", "down") for n in (1, 4)),
    *(
        f
        for size in (64, 1400)
        for f in (
            Figure(f"udp_{size}_pps", f"UDP {size} B received", "packets/s", "higher", "udp",
                   ratios=True),
            Figure(f"udp_{size}_loss", f"UDP {size} B loss", "%", "lower", "udp"),
        )
    ),
    Figure("rtt", "ping round trip", "ms", "lower", "latency"),
    Figure("added_rtt", "round trip added by the tunnel", "ms", "lower", "latency"),
    *(Figure(f"cpu_{role.replace('-', '_')}",
             "CPU of the whole machine" if role == "machine" else f"CPU of {role}",
             "s/GB", "lower", "cpu")
      for role in CPU_ROLES),
    Figure("setup", "tunnel up (start to ready)", "s", "lower", "setup"),
    Figure("flood_tcp_up_1", "TCP client→server, 1 stream, flooded", "Mbit/s", "higher",
           "flood", ratios=True),
    Figure("flood_kept", "of the same run's unflooded throughput", "%", "higher", "flood"),
)
BY_KEY = {f.key: f for f in FIGURES}

QUESTIONS = {
    "tcp": "TCP throughput through the tunnel",
    "udp": "UDP packets per second at a fixed offered load",
    "latency": "Ping latency added by the tunnel (round trip)",
    "cpu": "CPU seconds per GB moved (TCP tests)",
    "setup": "Tunnel setup",
    "flood": "TCP throughput while a hostile mix floods the server's port (bench --flood)",
}

SCALE_QUESTIONS = {
    "handshakes": "Handshakes per second, N clients connecting at once",
    "memory": "Server memory per connected peer",
}


def cpu_key(role: str) -> str:
    return f"cpu_{role.replace('-', '_')}"
