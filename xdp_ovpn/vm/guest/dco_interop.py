"""DCO interop, run inside a guest whose kernel has a DCO module: ovpn-dco-v2 with openvpn 2.6
(Debian 6.1, bookworm root) or the in-kernel ovpn with openvpn 2.7 (Debian 7.2, sid root);
`openvpn` is whichever the guest root has:

  1. openvpn+DCO client  -> openvpn+DCO server   (the baseline: DCO itself works here)
  2. openvpn+DCO client  -> xdp-ovpn server
  3. xdp-ovpn client     -> openvpn+DCO server

Each pair: the openvpn side must log that it opened its DCO device; ping through the tunnel;
iperf3 both ways (3 s each); reneg-sec 10, then wait for a second TLS handshake and ping
again. The xdp-ovpn side reports which data path it ran ("Data path: ..." in its log).
Prints one JSON line prefixed with RESULT_PREFIX; exits 1 if a check failed.

    xdp-ovpn vmtest --kernel 6.1 -- python3 -m xdp_ovpn.vm.guest.dco_interop
    xdp-ovpn vmtest --kernel 7.2 -- python3 -m xdp_ovpn.vm.guest.dco_interop
"""

from __future__ import annotations

import json
import os
import re
import subprocess

from xdp_ovpn.lab.openvpn import Endpoint
from xdp_ovpn.vm.guest.probe import load_dco
from xdp_ovpn.vm.guest.tunnel import namespaces, tunnel
from xdp_ovpn.vm.matrix import RESULT_PREFIX
from xdp_ovpn.vm.pace import scaled

DCO_LINE = "DCO device tun0 opened"  # openvpn 2.6 and 2.7 alike
HANDSHAKE = r"Control Channel: TLSv1\.\d"
RENEG_SEC = 10
PAIRS = (("openvpn", "openvpn"), ("xdp-ovpn", "openvpn"), ("openvpn", "xdp-ovpn"))


def check(checks: list[dict], name: str, ok: bool, detail: str) -> bool:
    checks.append({"check": name, "status": "ok" if ok else "FAIL", "detail": detail})
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def iperf(client_ns, server_ip: str, reverse: bool) -> tuple[bool, str]:
    cmd = ["iperf3", "-c", server_ip, "-t", "3", "-J", *(["-R"] if reverse else [])]
    out = client_ns.run(cmd, check=False, timeout=scaled(20))  # a 3 s run and its set-up
    try:
        bps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError):
        return False, (out.stderr or out.stdout).strip()[-200:] or "no output"
    where = " (emulated CPU)" if os.environ.get("XDP_OVPN_IN_VM") else ""
    return bps > 0, f"{bps / 1e6:.1f} Mbit/s{where}"


def data_path(end: Endpoint) -> str:
    found = re.search(r"Data path: .*", end.log())
    return found.group(0) if found else "no 'Data path:' line in the log"


def run_pair(server_prog: str, client_prog: str) -> list[dict]:
    checks: list[dict] = []
    extra = [f"reneg-sec {RENEG_SEC}"]
    with namespaces() as (lab, a, b), tunnel(a, b, server_prog, client_prog, extra) as (
        server, client
    ):
            for end in (server, client):
                side = "server" if end is server else "client"
                if end.program == "openvpn":
                    line = _line_with(end.log(), DCO_LINE)
                    driver = _driver(end)
                    check(checks, f"{side} uses DCO", line is not None and driver != "tun",
                          f"{line}; {end.dev} driver: {driver}" if line
                          else _dco_hint(end.log()))
                else:
                    check(checks, f"{side} data path", "Data path: xdp" in end.log(),
                          data_path(end))
            tip = server.tunnel_ipv4
            ping = b.run(["ping", "-c", "3", "-i", "0.3", "-W", "2", tip], check=False)
            check(checks, "ping", ping.returncode == 0, _ping_summary(ping.stdout))
            a.popen(["iperf3", "-s", "-B", tip], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
            lab.wait_for(lambda: a.run(["ss", "-ltn"], check=False).stdout.count(":5201") > 0)
            for reverse in (False, True):
                ok, detail = iperf(b, tip, reverse)
                check(checks, f"iperf3 {'server->client' if reverse else 'client->server'}",
                      ok, detail)
            # openvpn's own log is the oracle for the second handshake.
            observer = server if server.program == "openvpn" else client
            renegotiated = _wait_handshakes(observer, 2, timeout=3 * RENEG_SEC)
            check(checks, f"renegotiation (reneg-sec {RENEG_SEC})", renegotiated,
                  f"second TLS handshake in the {observer.program} log" if renegotiated
                  else f"no second handshake in the {observer.program} log")
            ping = b.run(["ping", "-c", "3", "-i", "0.3", "-W", "2", tip], check=False)
            check(checks, "ping after renegotiation", ping.returncode == 0,
                  _ping_summary(ping.stdout))
    return checks


def _wait_handshakes(end: Endpoint, count: int, timeout: float) -> bool:
    def enough() -> bool:
        return len(re.findall(HANDSHAKE, end.log())) >= count

    return end.ns.lab.wait_for(enough, timeout=timeout, interval=0.5)


def _driver(end: Endpoint) -> str:
    """The kernel driver behind the openvpn end's device (ethtool -i): ovpn or ovpn-dco
    with DCO, tun without; the second witness beside openvpn's own log line."""
    out = end.ns.run(["ethtool", "-i", end.dev], check=False)
    found = re.search(r"^driver:\s*(\S+)", out.stdout, re.MULTILINE)
    return found.group(1) if found else f"unknown ({(out.stderr or out.stdout).strip()[:80]})"


def _line_with(log: str, text: str) -> str | None:
    """The log line itself, so the report quotes what openvpn wrote."""
    return next((ln.strip() for ln in log.splitlines() if text in ln), None)


def _dco_hint(log: str) -> str:
    found = re.search(r".*(?:dco|DCO).*", log)
    return found.group(0).strip() if found else f"no '{DCO_LINE}' in the log"


def _ping_summary(out: str) -> str:
    found = re.search(r"\d+ packets transmitted, \d+ received", out)
    return found.group(0) if found else out.strip()[-120:] or "no output"


def main() -> int:
    module, error = load_dco()
    if error is not None:
        print(f"dco_interop: cannot load {module}: {error}")
        return 1
    version = subprocess.run(["openvpn", "--version"], capture_output=True, text=True)
    print(f"dco_interop: {module} loaded; {(version.stdout.splitlines() or ['?'])[0]}",
          flush=True)
    results = []
    for server_prog, client_prog in PAIRS:
        name = f"{_label(client_prog)} client -> {_label(server_prog)} server"
        print(name, flush=True)
        try:
            checks = run_pair(server_prog, client_prog)
        except Exception as exc:  # a pair that cannot start is a result, not a crash
            last = str(exc).strip().splitlines()
            checks = [{"check": "tunnel up", "status": "FAIL", "detail": " / ".join(last[-6:])}]
            print(f"  FAIL tunnel up: {str(exc).strip()}", flush=True)
        results.append({"pair": name, "checks": checks})
    print(RESULT_PREFIX + json.dumps(results), flush=True)
    return 0 if all(c["status"] == "ok" for r in results for c in r["checks"]) else 1


def _label(program: str) -> str:
    return "openvpn+DCO" if program == "openvpn" else program


if __name__ == "__main__":
    raise SystemExit(main())
