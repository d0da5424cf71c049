"""`xdp-ovpn lab demo`: an xdp-ovpn server on the XDP data path and a real openvpn 2.6 client.

In two fresh namespaces: a throwaway PKI, `xdp-ovpn run --data-path xdp` on the server
side, stock `openvpn` on the client side; then the handshake, a ping, a short iperf3 with
live counters (XDP verdicts per opcode, per-peer packets, throughput), and a summary that
says whether the tunnel carried its data over XDP. Everything is torn down at the end,
on Ctrl-C and on SIGTERM.

The counters come from a small child in the server namespace (`python -m
xdp_ovpn.demo counters IFACE TUN`) that reads the classifier's maps through the
loader and the interfaces' byte counters, and prints one JSON line per interval.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from xdp_ovpn.lab.netns import Lab, LabError, Namespace
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNError, OpenVPNServer, TunnelSpec
from xdp_ovpn.lab.pki import PKI

UNDERLAY = ("10.1.0.1", "10.1.0.2")
IFACE = "veth0"
TUN = "tun0"
INTERVAL = 0.5


# ------------------------------------------------------------------ the counters child


def _interface_bytes(ifname: str) -> dict[str, int]:
    base = Path("/sys/class/net") / ifname / "statistics"
    try:
        return {k: int((base / f"{k}_bytes").read_text()) for k in ("rx", "tx")}
    except (OSError, ValueError):
        return {}


def _snapshot(maps, ifname: str, tun: str) -> dict:
    from xdp_ovpn.loader.maps import opcode_name

    return {
        "time": time.monotonic(),
        "opcodes": {opcode_name(op): n for op, n in maps.opcode_counts().items() if n},
        "verdicts": {v.name.lower(): n for v, n in maps.verdict_counts().items() if n},
        "peers": {str(p): [c.packets, c.bytes] for p, c in maps.peer_counts().items()},
        "observe": maps.observe,
        "underlay": _interface_bytes(ifname),
        "tun": _interface_bytes(tun),
    }


def counters_main(ifname: str, tun: str, interval: float = INTERVAL) -> int:
    """Print the classifier's counters as JSON lines until killed or stdout closes."""
    maps, error = None, None
    while True:
        if maps is None:
            try:
                from xdp_ovpn.loader.classifier import open_attached
                from xdp_ovpn.loader.errors import LoaderError

                maps = open_attached(ifname)
            except (ImportError, OSError) as exc:
                error = str(exc)
            except LoaderError as exc:
                error = str(exc)
        if maps is not None:
            line = _snapshot(maps, ifname, tun)
        else:
            line = {"time": time.monotonic(), "error": error, "underlay": _interface_bytes(ifname),
                    "tun": _interface_bytes(tun)}
        try:
            print(json.dumps(line), flush=True)
        except BrokenPipeError:
            return 0
        time.sleep(interval)


class CounterFeed:
    """The latest counters from the child, read on a thread so the display never blocks."""

    def __init__(self, ns: Namespace, ifname: str = IFACE, tun: str = TUN) -> None:
        cmd = [sys.executable, "-m", "xdp_ovpn.demo", "counters", ifname, tun]
        self.proc = ns.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.latest: dict = {}
        self.first: dict = {}
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.latest = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not self.first:
                self.first = self.latest

    def wait(self, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while not self.latest and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.05)
        return self.latest

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=5)


# ------------------------------------------------------------------ display


def _count(n: int) -> str:
    return f"{n:,}"


def verdict_line(c: dict) -> str:
    v = c.get("verdicts", {})
    passed = sum(n for k, n in v.items() if k.startswith("pass"))
    dropped = sum(n for k, n in v.items() if k.startswith("drop"))
    redirected = _count(v.get("redirect", 0))
    return f"redirect {redirected} · pass {_count(passed)} · drop {_count(dropped)}"


def opcode_line(c: dict) -> str:
    ops = sorted(c.get("opcodes", {}).items(), key=lambda kv: -kv[1])
    return " · ".join(f"{name} {_count(n)}" for name, n in ops) or "none"


def peer_line(c: dict) -> str:
    peers = c.get("peers", {})
    return " · ".join(f"peer {p}: {_count(pk)} packets, {b / 1e6:,.1f} MB"
                      for p, (pk, b) in sorted(peers.items())) or "none"


def _rate(a: dict, b: dict, key: str, side: str) -> float | None:
    """Bits per second between two snapshots, from an interface's byte counter."""
    try:
        dt = b["time"] - a["time"]
        return 8 * (b[key][side] - a[key][side]) / dt if dt > 0 else None
    except (KeyError, TypeError):
        return None


class LiveLine:
    """One refreshing status line on a terminal; a line per second otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stdout.isatty()
        self._last_print = 0.0
        self._width = 0

    def show(self, text: str) -> None:
        if self.tty:
            pad = max(self._width - len(text), 0)
            click.echo("\r" + text + " " * pad, nl=False)
            self._width = len(text)
        elif time.monotonic() - self._last_print >= 1.0:
            click.echo(text)
            self._last_print = time.monotonic()

    def done(self) -> None:
        if self.tty and self._width:
            click.echo("")


# ------------------------------------------------------------------ the demo


@dataclass
class Outcome:
    data_path: str = "?"
    data_path_line: str = ""
    server_ready_s: float | None = None
    handshake_s: float | None = None
    ping: dict = field(default_factory=dict)
    iperf: dict = field(default_factory=dict)
    counters: dict = field(default_factory=dict)
    counters_error: str | None = None
    problems: list[str] = field(default_factory=list)


def step(text: str) -> None:
    click.echo(click.style("▸ ", fg="cyan") + text)


def _ping(ns: Namespace, target: str, count: int) -> dict:
    from xdp_ovpn.bench.measure import MeasureError, run_ping

    try:
        return run_ping(ns, target, count, 0.2)
    except MeasureError as exc:
        return {"error": str(exc)}


def _iperf(client_ns: Namespace, server_ns: Namespace, target: str, seconds: int,
           feed: CounterFeed | None) -> dict:
    """iperf3 client → server for `seconds`, with the live counters on one line."""
    from xdp_ovpn.bench.measure import (
        IPERF3_PORT,
        MeasureError,
        iperf3_command,
        parse_iperf3,
        wait_listening,
    )

    server_ns.popen(["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_listening(server_ns, IPERF3_PORT):
        return {"error": "iperf3 server did not start"}
    proc = client_ns.popen(iperf3_command(target, seconds), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    live, began = LiveLine(), time.monotonic()
    prev = feed.latest if feed else {}
    while proc.poll() is None and time.monotonic() - began < seconds + 20:
        time.sleep(INTERVAL)
        now = feed.latest if feed else {}
        rate = _rate(prev, now, "underlay", "rx") if prev and now else None
        text = f"  {time.monotonic() - began:4.1f} s"
        text += f"  {rate / 1e6:7,.0f} Mbit/s on the underlay" if rate is not None else ""
        if now.get("verdicts") is not None:
            text += f"  XDP {verdict_line(now)}"
            peers = now.get("peers", {})
            text += "  " + "  ".join(f"peer {p}: {_count(v[0])} pkts" for p, v in peers.items())
        live.show(text)
        prev = now or prev
    live.done()
    if proc.poll() is None:
        proc.kill()
    out = proc.communicate()[0]
    try:
        return parse_iperf3(out)
    except MeasureError as exc:
        return {"error": str(exc)}


def _pick_data_path(requested: str) -> tuple[str, str | None]:
    from xdp_ovpn.dataplane.factory import xdp_unavailable

    if requested == "socket":
        return "socket", None
    reason = xdp_unavailable()
    if reason is None:
        return "xdp", None
    if requested == "xdp":
        raise click.ClickException(f"the XDP data path cannot run here: {reason}")
    return "socket", reason


def run_demo(data_path: str = "auto", seconds: int = 5, wrapping: str = "tls-crypt") -> Outcome:
    """Build, exercise and tear down the demo tunnel; return what happened."""
    out = Outcome()
    path, why_not = _pick_data_path(data_path)
    out.data_path = path
    if why_not:
        click.secho(f"XDP data path unavailable ({why_not}): using the socket path; "
                    "XDP redirect counts will be 0.", fg="yellow")
    with Lab() as lab:
        srv, cli = lab.add_namespace("srv"), lab.add_namespace("cli")
        lab.link(srv, cli, addrs=(f"{UNDERLAY[0]}/24", f"{UNDERLAY[1]}/24"), names=(IFACE, IFACE))
        step(f"namespaces {srv.name} (server, {UNDERLAY[0]}) and {cli.name} (client, "
             f"{UNDERLAY[1]}) on one veth pair")
        spec = TunnelSpec(PKI(), wrapping=wrapping, network6=None)
        step(f"throwaway PKI (CA, server and client certificates), {wrapping} key, "
             f"data cipher {spec.cipher}")
        server = OpenVPNServer(srv, spec, program="xdp-ovpn")
        base = server.command()
        server.command = lambda: [*base, "--data-path", path]  # type: ignore[method-assign]
        began = time.monotonic()
        with server:
            out.server_ready_s = time.monotonic() - began
            step(f"server: xdp-ovpn run --data-path {path}  (in {srv.name}), ready in "
                 f"{out.server_ready_s:.2f} s")
            if found := _log_line(server, r"Data path: .*"):
                out.data_path_line = found.removeprefix("Data path: ")
                step(f"server says: {found}")
            feed = CounterFeed(srv) if path == "xdp" else None
            try:
                _exercise(out, server, OpenVPNClient(cli, server, remote=UNDERLAY[0]), feed,
                          seconds)
            finally:
                if feed:
                    feed.stop()
    return out


def _exercise(out: Outcome, server: OpenVPNServer, client: OpenVPNClient,
              feed: CounterFeed | None, seconds: int) -> None:
    """Connect the client, then ping and iperf3 through the tunnel, watching the counters."""
    began = time.monotonic()
    with client:
        out.handshake_s = time.monotonic() - began
        step(f"client: {_openvpn_version()} connected in {out.handshake_s:.2f} s (TLS "
             f"handshake, push, TUN; client {client.tun_ipv4()}, server {server.tunnel_ipv4})")
        out.ping = _ping(client.ns, server.tunnel_ipv4, 5)
        step(f"ping {server.tunnel_ipv4}: {_ping_text(out.ping)}")
        step(f"iperf3 {seconds} s, client → server through the tunnel:")
        out.iperf = _iperf(client.ns, server.ns, server.tunnel_ipv4, seconds, feed)
        if feed:
            time.sleep(INTERVAL * 2)  # one more snapshot after the last packet
            out.counters = feed.latest
            out.counters_error = (out.counters.get("error") if out.counters
                                  else "no counters were read")


def _log_line(endpoint, pattern: str) -> str | None:
    try:
        return endpoint.wait_for_log(pattern, timeout=5).group(0).strip()
    except OpenVPNError:
        return None


def _openvpn_version() -> str:
    text = subprocess.run(["openvpn", "--version"], capture_output=True, text=True).stdout
    return " ".join(text.split()[:2]) if text else "openvpn"


def _ping_text(p: dict) -> str:
    if "error" in p:
        return p["error"]
    text = f"{p['received']:.0f}/{p['sent']:.0f} replies"
    return text + (f", round trip avg {p['rtt_avg_ms']:.3f} ms" if "rtt_avg_ms" in p else "")


def _iperf_text(r: dict) -> str:
    if "error" in r:
        return r["error"]
    return (f"{r['bits_per_second'] / 1e6:,.0f} Mbit/s over {r['seconds']:.1f} s, "
            f"{r['bytes'] / 1e6:,.1f} MB, {r.get('retransmits', 0):.0f} retransmits")


def summarize(out: Outcome) -> tuple[list[tuple[str, str]], bool, str]:
    """Rows of the summary, whether the tunnel worked, and a one-line verdict."""
    c = out.counters or {}
    redirected = c.get("verdicts", {}).get("redirect", 0)
    rows = [("data path", out.data_path_line or out.data_path)]
    rows.append(("handshake", f"{out.handshake_s:.2f} s (client start to tunnel up)"
                 if out.handshake_s else "–"))
    rows.append(("ping", _ping_text(out.ping) if out.ping else "–"))
    rows.append(("iperf3", _iperf_text(out.iperf) if out.iperf else "–"))
    if out.data_path == "xdp":
        if c.get("verdicts") is not None:
            rows += [("XDP verdicts", verdict_line(c)), ("per opcode", opcode_line(c)),
                     ("per peer", peer_line(c))]
        else:
            rows.append(("XDP counters", out.counters_error or "not read"))
    else:
        rows.append(("XDP verdicts", "redirect 0 (socket data path: no XDP program)"))
    ping_ok = bool(out.ping) and out.ping.get("received", 0) > 0
    iperf_ok = bool(out.iperf) and "error" not in out.iperf
    worked = ping_ok and iperf_ok
    if not worked:
        verdict = "the tunnel did NOT carry traffic: " + ("ping failed" if not ping_ok
                                                         else "iperf3 failed")
    elif out.data_path == "xdp" and redirected > 0:
        verdict = (f"the tunnel worked over XDP: {_count(redirected)} DATA_V2 packets were "
                   "redirected to AF_XDP")
    elif out.data_path == "xdp":
        worked = False
        verdict = "the tunnel worked, but no DATA_V2 packet was redirected by XDP"
    else:
        verdict = "the tunnel worked on the socket data path (not over XDP)"
    return rows, worked, verdict


def print_summary(out: Outcome) -> bool:
    rows, worked, verdict = summarize(out)
    click.echo("")
    click.secho("Summary", bold=True)
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    click.secho(f"  {verdict}", fg="green" if worked else "red", bold=True)
    return worked


def missing_tools() -> list[str]:
    return [t for t in ("openvpn", "iperf3", "ping", "ip", "ss") if shutil.which(t) is None]


@click.command()
@click.option("--data-path", type=click.Choice(["auto", "xdp", "socket"]), default="auto",
              show_default=True, help="auto: XDP when this machine can run it, else socket.")
@click.option("--seconds", type=click.IntRange(1, 60), default=5, show_default=True,
              help="iperf3 duration.")
@click.option("--wrapping", type=click.Choice(["none", "tls-auth", "tls-crypt", "tls-crypt-v2"]),
              default="tls-crypt", show_default=True, help="Control-channel wrapping.")
def demo(data_path: str, seconds: int, wrapping: str) -> None:
    """xdp-ovpn server (XDP data path) and a real openvpn client in fresh namespaces."""
    import os

    from xdp_ovpn.lab import interrupt_on_sigterm, sweep_own_namespaces

    if os.geteuid() != 0:
        raise click.ClickException("needs root (network namespaces, TUN, XDP)")
    if missing := missing_tools():
        raise click.ClickException(f"missing tools: {', '.join(missing)} (run scripts/setup.sh)")
    interrupt_on_sigterm()
    try:
        out = run_demo(data_path, seconds, wrapping)
    except KeyboardInterrupt:
        sweep_own_namespaces()
        click.echo("\ninterrupted; namespaces and processes removed", err=True)
        raise SystemExit(130) from None
    except OpenVPNError as exc:  # keep the endpoint's log tail: it says why
        sweep_own_namespaces()
        raise click.ClickException(str(exc).strip()) from None
    except (LabError, OSError) as exc:
        sweep_own_namespaces()
        raise click.ClickException(str(exc).strip().splitlines()[0]) from None
    raise SystemExit(0 if print_summary(out) else 1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["counters"] and len(sys.argv) >= 4:
        raise SystemExit(counters_main(sys.argv[2], sys.argv[3]))
    raise SystemExit("usage: python -m xdp_ovpn.demo counters IFACE TUN")
