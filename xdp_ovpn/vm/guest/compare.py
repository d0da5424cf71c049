"""Relative data-path comparison on one guest: userspace openvpn vs openvpn+DCO vs xdp-ovpn.

Same guest, same two namespaces, same iperf3 TCP run through each tunnel (and over the bare
veth as the reference), alternating the order over rounds. Under TCG the CPU is emulated, so
only the ratios within one run mean anything; the absolute figures are the emulator's.
Prints one JSON line prefixed with RESULT_PREFIX.

    xdp-ovpn vmtest --kernel 6.1 -- python3 -m xdp_ovpn.vm.guest.compare [ROUNDS]
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator

from xdp_ovpn.dataplane.engine import ENGINE_ENV
from xdp_ovpn.lab import Lab
from xdp_ovpn.vm.guest.probe import load_dco
from xdp_ovpn.vm.guest.tunnel import SERVER_IP, namespaces, tunnel
from xdp_ovpn.vm.matrix import RESULT_PREFIX
from xdp_ovpn.vm.pace import scaled

SECONDS = 5
# name -> (program, extra config lines, xdp-ovpn engine): both ends run the same
# implementation. "openvpn+DCO" is ovpn-dco-v2 with openvpn 2.6 (6.1) or the in-kernel
# ovpn with openvpn 2.7 (7.2): whichever load_dco() found.
SCENARIOS = {
    "openvpn (userspace)": ("openvpn", ["disable-dco"], None),
    "openvpn+DCO": ("openvpn", [], None),
    "xdp-ovpn, native engine": ("xdp-ovpn", [], "native"),
    "xdp-ovpn, python engine": ("xdp-ovpn", [], "python"),
}


def iperf_mbps(lab: Lab, server_ns, client_ns, target: str) -> float:
    server = server_ns.popen(["iperf3", "-s", "-1", "-B", target],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab.wait_for(lambda: ":5201" in server_ns.run(["ss", "-ltn"], check=False).stdout)
    out = client_ns.run(["iperf3", "-c", target, "-t", str(SECONDS), "-J"], timeout=scaled(30))
    server.wait(timeout=30)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def measure(name: str | None) -> tuple[float, str]:
    """One iperf3 run: over the bare veth (name None) or through the scenario's tunnel."""
    with namespaces() as (lab, a, b):
        if name is None:
            return iperf_mbps(lab, a, b, SERVER_IP), "veth"
        program, extra, engine = SCENARIOS[name]
        with _engine(engine), tunnel(a, b, program, program, extra) as (server, client):
            return iperf_mbps(lab, a, b, server.tunnel_ipv4), _mode(client.log(), program)


@contextlib.contextmanager
def _engine(engine: str | None) -> Iterator[None]:
    """xdp-ovpn's `--engine auto` means $XDP_OVPN_ENGINE: both ends started meanwhile run it."""
    before = os.environ.get(ENGINE_ENV)
    if engine:
        os.environ[ENGINE_ENV] = engine
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENGINE_ENV, None)
        else:
            os.environ[ENGINE_ENV] = before


def openvpn_version() -> str:
    out = subprocess.run(["openvpn", "--version"], capture_output=True, text=True)
    return (out.stdout.splitlines() or ["openvpn: no version"])[0]


def _mode(log: str, program: str) -> str:
    if program == "xdp-ovpn":
        found = re.search(r"Data path: .*", log)
        epoch = "; epoch data format" if re.search(r"epoch data format", log) else ""
        return found.group(0) + epoch if found else "data path not logged"
    return "DCO" if "DCO device tun0 opened" in log else "userspace"


def main(rounds: int) -> int:
    load_dco()  # ovpn-dco-v2 (6.1) or the in-kernel ovpn (7.2); without one, openvpn says so
    names: list[str | None] = [None, *SCENARIOS]
    samples: dict[str, list[float]] = {}
    modes: dict[str, str] = {}
    for r in range(rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for name in order:
            label = name or "bare veth"
            try:
                mbps, mode = measure(name)
            except Exception as exc:  # one failed scenario must not hide the others
                modes[label] = f"failed: {str(exc).strip().splitlines()[0][:160]}"
                continue
            samples.setdefault(label, []).append(mbps)
            modes[label] = mode
            print(f"round {r + 1}: {label}: {mbps:.1f} Mbit/s ({mode})", flush=True)
    bare = statistics.median(samples.get("bare veth", [0.0])) or float("nan")
    rows = []
    for name in ["bare veth", *SCENARIOS]:
        values = samples.get(name, [])
        median = statistics.median(values) if values else None
        rows.append({"scenario": name, "mode": modes.get(name, "not run"),
                     "median_mbps": median, "samples": values,
                     "vs_bare": median / bare if median else None})
    print(RESULT_PREFIX + json.dumps({"emulated_cpu": True, "seconds": SECONDS,
                                      "rounds": rounds, "openvpn": openvpn_version(),
                                      "rows": rows}), flush=True)
    return 0 if all(r["median_mbps"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2))
