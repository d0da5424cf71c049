"""One measurement each: iperf3 (TCP, UDP), ping, and the CPU and memory of process trees.

Traffic generators run inside lab namespaces with bounded durations; their output is
parsed here into plain dicts of numbers, so the runner and the report never see text.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from xdp_ovpn.lab.netns import LabError, Namespace

IPERF3_PORT = 5201
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_PING_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_PING_COUNT = re.compile(r"(\d+) packets transmitted, (\d+) received")


class MeasureError(LabError):
    """A traffic generator failed or printed something we cannot read."""


# ------------------------------------------------------------------ iperf3


def iperf3_command(
    target: str,
    seconds: float,
    streams: int = 1,
    reverse: bool = False,
    udp_len: int | None = None,
    udp_pps: int | None = None,
) -> list[str]:
    """An iperf3 client command: TCP, or UDP at a fixed offered load of `udp_pps`."""
    # iperf3 3.12 reads -t as a whole number, and 0 would mean "forever"
    cmd = ["iperf3", "-c", target, "-t", str(max(1, round(seconds))), "-P", str(streams), "--json",
           "--connect-timeout", "3000"]
    if reverse:
        cmd.append("-R")
    if udp_len is not None:
        rate = udp_len * 8 * (udp_pps or 10_000)  # iperf3 paces by bits of payload
        cmd += ["-u", "-l", str(udp_len), "-b", str(rate)]
    return cmd


def parse_iperf3(text: str) -> dict[str, float]:
    """The figures of one iperf3 --json result, as seen by the receiver."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MeasureError(f"iperf3 printed no JSON: {text.strip()[:200]!r}") from exc
    if "error" in doc:
        raise MeasureError(f"iperf3: {doc['error']}")
    end = doc.get("end", {})
    received, sent = end.get("sum_received"), end.get("sum_sent")
    if not received or not sent:
        raise MeasureError("iperf3 JSON has no end.sum_received/sum_sent")
    seconds = received.get("seconds") or 1e-9
    out = {
        "bits_per_second": float(received["bits_per_second"]),
        "bytes": float(received["bytes"]),
        "seconds": float(seconds),
        "sent_bytes": float(sent["bytes"]),
    }
    if "retransmits" in sent:
        out["retransmits"] = float(sent["retransmits"])
    if "lost_packets" in received:  # UDP: the receiver counts what never arrived
        expected = float(received["packets"])
        lost = float(received["lost_packets"])
        out |= {
            "sent_pps": float(sent["packets"]) / (sent.get("seconds") or seconds),
            "received_pps": max(expected - lost, 0.0) / seconds,
            "lost_percent": 100.0 * lost / expected if expected else 100.0,
            "jitter_ms": float(received.get("jitter_ms", 0.0)),
        }
    return out


def run_iperf3(ns: Namespace, cmd: list[str], seconds: float) -> dict[str, float]:
    """Run an iperf3 client to completion; adds its own CPU seconds (`client_cpu_s`)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = ns.run(cmd, check=False, timeout=seconds + 20)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = parse_iperf3(proc.stdout)
    result["client_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


# ------------------------------------------------------------------ ping


def parse_ping(text: str) -> dict[str, float]:
    """Round-trip figures (ms) and the loss of one `ping -q` summary."""
    counts = _PING_COUNT.search(text)
    if not counts:
        raise MeasureError(f"ping printed no summary: {text.strip()[-200:]!r}")
    sent, received = int(counts[1]), int(counts[2])
    out = {"sent": float(sent), "received": float(received),
           "lost_percent": 100.0 * (sent - received) / sent if sent else 100.0}
    if rtt := _PING_RTT.search(text):
        out |= dict(zip(("rtt_min_ms", "rtt_avg_ms", "rtt_max_ms", "rtt_mdev_ms"),
                        map(float, rtt.groups()), strict=True))
    return out


def run_ping(ns: Namespace, target: str, count: int, interval: float = 0.02) -> dict[str, float]:
    """`count` pings `interval` apart (root may go below 0.2 s), summarised."""
    cmd = ["ping", "-q", "-n", "-c", str(count), "-i", f"{interval:g}", "-W", "2", target]
    proc = ns.run(cmd, check=False, timeout=count * interval + 15)
    return parse_ping(proc.stdout)


# ------------------------------------------------------------------ processes


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """pid and all its live descendants (worker processes count as the endpoint's)."""
    children = _children_map()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process tree, including children it has reaped."""
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            f = _stat_fields(p)
            total += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    return total / _TICKS


def memory_bytes(pid: int) -> int:
    """Proportional set size of a process tree (RSS where PSS is unavailable).

    PSS splits pages shared between a forked worker and its parent, so a tree's sum is real.
    """
    total = 0
    for p in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            if found := re.search(r"^Pss:\s+(\d+) kB", rollup, re.M):
                total += int(found[1]) * 1024
                continue
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
    return total


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has been busy (/proc/stat: user, nice, system, irq,
    softirq, steal over all CPUs): kernel work in softirq (XDP, veth NAPI, AF_XDP copies)
    that no process is charged for is counted here."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


MACHINE = "machine"  # the CpuMeter role of the whole machine


class CpuMeter:
    """CPU seconds spent by named process trees, and by the whole machine (role
    MACHINE), between `start()` and `stop()`."""

    def __init__(self, roles: Mapping[str, int]) -> None:
        self.roles = dict(roles)
        self._start: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        sample = {role: cpu_seconds(pid) for role, pid in self.roles.items()}
        sample[MACHINE] = machine_cpu_seconds()
        return sample

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        end = self._sample()
        return {role: max(end[role] - self._start.get(role, 0.0), 0.0) for role in end}


def per_gigabyte(cpu: Mapping[str, float], n_bytes: float) -> dict[str, float]:
    """CPU seconds per GB (10^9 bytes) moved, per role."""
    gb = n_bytes / 1e9
    return {role: seconds / gb for role, seconds in cpu.items()} if gb > 0 else {}


def wait_listening(ns: Namespace, port: int, timeout: float = 5.0) -> bool:
    """True once something listens on TCP `port` in the namespace."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ns.run(["ss", "-Hltn", f"sport = :{port}"], check=False).stdout.strip():
            return True
        time.sleep(0.05)
    return False


# ------------------------------------------------------------------ flood

_VERDICTS = """
import json, sys
from xdp_ovpn.loader.classifier import open_attached
counts = open_attached(sys.argv[1]).verdict_counts()
print(json.dumps({v.name.lower(): n for v, n in counts.items()}))
"""


def xdp_verdicts(ns: Namespace, ifname: str = "veth0") -> dict[str, int]:
    """The counters of the XDP classifier on ifname in ns, by verdict name."""
    out = ns.run([sys.executable, "-c", _VERDICTS, ifname]).stdout
    return {k: int(v) for k, v in json.loads(out).items()}


def start_flood(ns: Namespace, target_ns: Namespace, pps: int, seconds: float,
                ifname: str = "veth0") -> subprocess.Popen:
    """lab.flood out of ns's ifname at target_ns's ifname (its first address, port 1194),
    for at most `seconds`."""
    link = target_ns.ipr.get_links(ifname=ifname)[0]
    addr = target_ns.ipr.get_addr(index=link["index"], family=socket.AF_INET)[0]
    to = f"{addr.get_attr('IFA_ADDRESS')}:1194"
    return ns.popen([sys.executable, "-m", "xdp_ovpn.lab.flood", "--interface", ifname,
                     "--mac", link.get_attr("IFLA_ADDRESS"), "--to", to, "--pps", str(pps),
                     "--seconds", str(seconds)], stdout=subprocess.PIPE, text=True)


def stop_flood(flood: subprocess.Popen) -> dict[str, int]:
    """Stop a start_flood process; what it sent, per kind."""
    flood.terminate()
    try:
        out, _ = flood.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        flood.kill()
        flood.communicate()
        raise MeasureError("the flood did not stop") from None
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise MeasureError(f"the flood printed no counts: {out.strip()[:200]!r}") from None
