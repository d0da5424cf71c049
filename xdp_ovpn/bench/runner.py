"""One benchmark run: every scenario, several repetitions, alternating order, then the scale
figures, then medians and ratios computed within the run.

The run is a plain dict (the JSON document); `report` and `charts` only read it. A
scenario that cannot run here is listed with its reason; a test that fails records
its error and the run goes on. The benchmark never asserts speed: it reports it.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from xdp_ovpn.bench import environment
from xdp_ovpn.bench.figures import CPU_ROLES, FIGURES, cpu_key
from xdp_ovpn.bench.measure import (
    IPERF3_PORT,
    CpuMeter,
    MeasureError,
    cpu_seconds,
    iperf3_command,
    memory_bytes,
    run_iperf3,
    run_ping,
    start_flood,
    stop_flood,
    wait_listening,
    xdp_verdicts,
)
from xdp_ovpn.bench.peers import SCALE_NETWORK, SERVER_EXTRA, spawn_clients, write_material
from xdp_ovpn.bench.scenarios import (
    BARE,
    BY_NAME,
    SCENARIOS,
    UNDERLAY,
    USERSPACE,
    Scenario,
    Topology,
    bring_up,
    run_queues,
    server_endpoint,
    two_hosts,
)
from xdp_ovpn.bench.stats import median_of, ratio, summarize
from xdp_ovpn.dataplane.api import DataPlaneError
from xdp_ovpn.dataplane.engine import check_workers
from xdp_ovpn.lab.netns import Lab, LabError
from xdp_ovpn.lab.openvpn import TunnelSpec
from xdp_ovpn.lab.pki import PKI

SCHEMA = "xdp-ovpn-bench/1"
Progress = Callable[[str], None]


@dataclass
class BenchConfig:
    """Everything that shapes a run; stored verbatim in its JSON."""

    repetitions: int = 5
    tcp_seconds: float = 5.0
    tcp_streams: tuple[int, ...] = (1, 4)
    udp_seconds: float = 5.0
    udp_sizes: tuple[int, ...] = (64, 1400)
    udp_pps: int = 50_000  # offered load, the same for every scenario
    ping_count: int = 50
    ping_interval: float = 0.02
    handshake_clients: int = 50  # N clients connecting at once
    peer_counts: tuple[int, ...] = (1, 100, 1000)
    peer_concurrency: int = 32  # handshakes in flight while filling a server with peers
    scale_repetitions: int = 3
    cipher: str = "AES-256-GCM"
    engine: str = "auto"  # the xdp-ovpn endpoints' --engine (resolved before the run)
    workers: int | None = None  # their --workers on XDP (the veth then has >= 2 queues)
    wrapping: str = "none"
    underlay_mtu: int = 1500
    scenarios: tuple[str, ...] = tuple(s.name for s in SCENARIOS)
    settle_seconds: float = 0.3
    timeout: float = 60.0  # tunnel up / all peers connected
    flood_pps: int = 0  # > 0: TCP up once more under lab.flood's hostile mix at this rate

    @classmethod
    def quick(cls, **overrides: object) -> BenchConfig:
        """Short tests and fewer repetitions: the whole run in a few minutes."""
        base = dict(repetitions=2, tcp_seconds=2.0, udp_seconds=2.0, ping_count=20,
                    handshake_clients=20, scale_repetitions=1)
        return cls(**(base | overrides))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ScaleTarget:
    """A server implementation facing simulated clients."""

    program: str
    data_path: str | None

    @property
    def key(self) -> str:
        return self.program if not self.data_path else f"{self.program}/{self.data_path}"

    @property
    def label(self) -> str:
        path = {"xdp": " (XDP)", "socket": " (socket path)"}.get(self.data_path or "", "")
        return f"{self.program} server{path}"


def scale_targets(scenarios: list[Scenario]) -> list[ScaleTarget]:
    """One target per distinct server of the runnable tunnel scenarios."""
    seen: dict[ScaleTarget, None] = {}
    for s in scenarios:
        if s.server:
            path = s.data_path if s.server == "xdp-ovpn" else None
            seen.setdefault(ScaleTarget(s.server, path), None)
    return list(seen)


def _redact(config: str) -> str:
    """A config text with its inline keys and certificates replaced by a placeholder."""
    return re.sub(r"<([\w-]+)>\n.*?\n</\1>", r"<\1>[throwaway, not kept]</\1>", config,
                  flags=re.S)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


@dataclass
class Runner:
    config: BenchConfig
    progress: Progress = print
    doc: dict = field(default_factory=dict)
    rx_queues: int | None = None  # the veth's queues in use, every scenario (run_queues)

    # ------------------------------------------------------------ the run

    def run(self) -> dict:
        cfg = self.config
        began = time.time()
        self.doc = {
            "schema": SCHEMA,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(began)),
            "config": dataclasses.asdict(cfg),
            "environment": environment.describe(),
            "scenarios": [],
            "runs": [],
            "scale": [],
            "interrupted": False,
        }
        runnable = self._available([BY_NAME[n] for n in cfg.scenarios])
        self.rx_queues = self.doc["rx_queues"] = run_queues(runnable, cfg.workers)
        spec = TunnelSpec(PKI(), wrapping=cfg.wrapping, cipher=cfg.cipher,
                          network=SCALE_NETWORK, network6=None)
        self.doc["tunnel"] = {
            "server_config": _redact(spec.server_config()),
            "client_config": _redact(spec.client_config(UNDERLAY[0])),
            "scale_server_extra": {k: list(v) for k, v in SERVER_EXTRA.items()},
        }
        try:
            self._throughput(runnable, spec)
            self._scale(scale_targets(runnable), spec)
        except KeyboardInterrupt:
            self.doc["interrupted"] = True
            raise
        finally:
            self.doc["seconds"] = round(time.time() - began, 1)
            self.doc |= summarize_run(self.doc)
        return self.doc

    def _available(self, scenarios: list[Scenario]) -> list[Scenario]:
        """List every scenario in the document; return those that can run here."""
        runnable = []
        for s in scenarios:
            reason = s.unavailable()
            if reason is None and s.workers:
                try:
                    check_workers(s.workers, self.config.engine)
                except DataPlaneError as exc:
                    reason = str(exc)
            entry = dataclasses.asdict(s) | {"available": reason is None}
            if reason:
                entry["unavailable"] = reason
                self.progress(f"{s.name}: unavailable: {reason}")
            else:
                runnable.append(s)
            self.doc["scenarios"].append(entry)
        return runnable

    def _throughput(self, runnable: list[Scenario], spec: TunnelSpec) -> None:
        total = len(runnable) * self.config.repetitions
        done = 0
        for rep in range(self.config.repetitions):
            # ABC CBA ABC ...: drift in the machine's load hits every scenario alike
            order = runnable if rep % 2 == 0 else runnable[::-1]
            for s in order:
                done += 1
                self.progress(f"[{done}/{total}] {s.name} (repetition {rep + 1})")
                self.doc["runs"].append(self.run_scenario(s, rep, spec))

    # ------------------------------------------------------------ one scenario

    def run_scenario(self, s: Scenario, rep: int, spec: TunnelSpec) -> dict:
        record: dict = {"scenario": s.name, "rep": rep, "tests": {}, "errors": {}}
        try:
            with Lab() as lab, bring_up(s, lab, spec, self.config.underlay_mtu,
                                        self.config.timeout, self.config.engine,
                                        self.config.workers, self.rx_queues) as topo:
                if s.tunnel:
                    record["setup_s"] = topo.setup_seconds
                self._tests(topo, record)
        except (LabError, OSError, subprocess.SubprocessError) as exc:
            record["error"] = _first_line(exc)
            self.progress(f"  {s.name}: {record['error']}")
        record["figures"] = figures_of(record)
        return record

    def _tests(self, topo: Topology, record: dict) -> None:
        cfg = self.config
        ns_s, ns_c = topo.server_ns, topo.client_ns
        iperf = ns_s.popen(["iperf3", "-s"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_listening(ns_s, IPERF3_PORT):
            raise MeasureError("iperf3 server did not start listening")
        roles = topo.processes | {"iperf3-server": iperf.pid}
        run_ping(ns_c, topo.target, 2, 0.1)  # warm up neighbour tables and routes
        tests: list[tuple[str, Callable[[], dict]]] = [
            ("ping", lambda: run_ping(ns_c, topo.target, cfg.ping_count, cfg.ping_interval)),
        ]
        for direction in ("up", "down"):
            for n in cfg.tcp_streams:
                cmd = iperf3_command(topo.target, cfg.tcp_seconds, n, direction == "down")
                tests.append((f"tcp_{direction}_{n}", self._metered(ns_c, cmd, roles)))
        for size in cfg.udp_sizes:
            cmd = iperf3_command(topo.target, cfg.udp_seconds, udp_len=size, udp_pps=cfg.udp_pps)
            tests.append((f"udp_{size}", self._metered(ns_c, cmd, roles)))
        if cfg.flood_pps and topo.scenario.tunnel:
            cmd = iperf3_command(topo.target, cfg.tcp_seconds, 1)
            tests.append(("flood_tcp_up_1", self._flooded(topo, cmd, roles)))
        for name, test in tests:
            time.sleep(cfg.settle_seconds)
            try:
                record["tests"][name] = result = test()
            except (MeasureError, subprocess.SubprocessError) as exc:
                record["errors"][name] = _first_line(exc)
                self.progress(f"  {name}: {record['errors'][name]}")
                continue
            self.progress(f"  {name:<12} {_brief(result)}")

    def _metered(self, ns, cmd: list[str], roles: dict[str, int]) -> Callable[[], dict]:
        seconds = float(cmd[cmd.index("-t") + 1])

        def test() -> dict:
            meter = CpuMeter(roles)
            meter.start()
            result = run_iperf3(ns, cmd, seconds)
            result["cpu_s"] = meter.stop() | {"iperf3-client": result.pop("client_cpu_s")}
            return result

        return test

    def _flooded(self, topo: Topology, cmd: list[str], roles: dict[str, int]
                 ) -> Callable[[], dict]:
        """The metered test while lab.flood sends its mix from the client's side; what was
        sent, and on an XDP server what its classifier did meanwhile."""
        seconds = float(cmd[cmd.index("-t") + 1])
        metered = self._metered(topo.client_ns, cmd, roles)
        xdp = topo.scenario.server == "xdp-ovpn" and topo.scenario.data_path == "xdp"

        def test() -> dict:
            before = xdp_verdicts(topo.server_ns) if xdp else {}
            flood = start_flood(topo.client_ns, topo.server_ns, self.config.flood_pps,
                                seconds + 10)
            try:
                time.sleep(0.5)  # the flood at full rate before the measurement starts
                result = metered()
            finally:
                sent = stop_flood(flood)
            result["flood"] = {"pps": self.config.flood_pps, "sent": sent}
            if xdp:
                after = xdp_verdicts(topo.server_ns)
                result["flood"]["xdp_verdicts"] = {k: n - before.get(k, 0)
                                                   for k, n in after.items()}
            return result

        return test

    # ------------------------------------------------------------ scale

    def _scale(self, targets: list[ScaleTarget], spec: TunnelSpec) -> None:
        cfg = self.config
        plan = [("handshake", cfg.handshake_clients, cfg.handshake_clients)]
        plan += [("memory", n, min(n, cfg.peer_concurrency)) for n in cfg.peer_counts]
        with tempfile.TemporaryDirectory(prefix="xo-bench-") as tmp:
            material = Path(tmp) / "client.json"
            write_material(spec, material)
            for rep in range(cfg.scale_repetitions):
                for target in targets if rep % 2 == 0 else targets[::-1]:
                    for kind, peers, concurrency in plan:
                        self.progress(f"scale: {target.label}, {peers} peers ({kind}, "
                                      f"repetition {rep + 1})")
                        record = {"target": target.key, "label": target.label, "kind": kind,
                                  "peers": peers, "concurrency": concurrency,
                                  "rep": rep}
                        try:
                            record |= self.scale_one(target, spec, material, peers, concurrency)
                            self.progress(f"  {_brief(record)}")
                        except (LabError, OSError, subprocess.SubprocessError, ValueError) as exc:
                            record["error"] = _first_line(exc)
                            self.progress(f"  {record['error']}")
                        self.doc["scale"].append(record)

    def scale_one(self, target: ScaleTarget, spec: TunnelSpec, material: Path, peers: int,
                  concurrency: int) -> dict:
        """A fresh server, `peers` simulated clients; memory and CPU before and after."""
        cfg = self.config
        with Lab() as lab:
            ns_s, ns_c = two_hosts(lab, cfg.underlay_mtu, self.rx_queues)
            server = server_endpoint(ns_s, spec, target.program, target.data_path,
                                     SERVER_EXTRA[target.program], cfg.engine, cfg.workers)
            with server:
                assert server.proc is not None
                pid = server.proc.pid
                time.sleep(cfg.settle_seconds)
                mem0, cpu0 = memory_bytes(pid), cpu_seconds(pid)
                child = spawn_clients(ns_c, material, UNDERLAY[0], spec.port, peers,
                                      concurrency, cfg.timeout)
                try:
                    assert child.stdout is not None and child.stdin is not None
                    line = child.stdout.readline()
                    if not line:
                        raise MeasureError("the simulated clients exited without a result")
                    result = json.loads(line)
                    time.sleep(cfg.settle_seconds)  # let the server finish its side
                    mem1, cpu1 = memory_bytes(pid), cpu_seconds(pid)
                    child.stdin.close()
                    child.wait(timeout=15)
                finally:
                    if child.poll() is None:
                        child.kill()
        established = result["established"]
        return result | {
            "memory_before": mem0,
            "memory_after": mem1,
            "memory_per_peer": (mem1 - mem0) / established if established else None,
            "server_cpu_s": cpu1 - cpu0,
            "handshakes_per_s": established / result["seconds"] if result["seconds"] else None,
        }


def _brief(result: dict) -> str:
    """One progress line's worth of a result."""
    if "rtt_avg_ms" in result:
        return f"{result['rtt_avg_ms']:.3f} ms avg, {result['lost_percent']:.0f} % lost"
    if "received_pps" in result:
        return (f"{result['received_pps']:,.0f} packets/s received, "
                f"{result['lost_percent']:.1f} % lost")
    if "bits_per_second" in result:
        return f"{result['bits_per_second'] / 1e6:,.0f} Mbit/s"
    if "handshakes_per_s" in result:
        per_peer = result.get("memory_per_peer")
        mem = f", {per_peer / 1024:,.0f} KiB/peer" if per_peer is not None else ""
        return (f"{result['established']}/{result['clients']} up in {result['seconds']:.2f} s "
                f"({result['handshakes_per_s'] or 0:,.0f}/s){mem}")
    return ""


# ------------------------------------------------------------------ figures and summary


def figures_of(record: dict) -> dict[str, float]:
    """The per-repetition figures of one scenario run (see figures.FIGURES)."""
    tests = record.get("tests", {})
    out: dict[str, float] = {}
    tcp_bytes, tcp_cpu = 0.0, dict.fromkeys(CPU_ROLES, 0.0)
    for name, r in tests.items():
        if name.startswith("tcp_"):
            out[name] = r["bits_per_second"] / 1e6
            tcp_bytes += r["bytes"]
            for role, seconds in r.get("cpu_s", {}).items():
                tcp_cpu[role] = tcp_cpu.get(role, 0.0) + seconds
        elif name.startswith("udp_"):
            out[f"{name}_pps"] = r["received_pps"]
            out[f"{name}_loss"] = r["lost_percent"]
        elif name == "ping" and "rtt_avg_ms" in r:
            out["rtt"] = r["rtt_avg_ms"]
        elif name == "flood_tcp_up_1":
            out[name] = r["bits_per_second"] / 1e6
            calm = tests.get("tcp_up_1")
            if calm and calm["bits_per_second"]:
                out["flood_kept"] = 100 * r["bits_per_second"] / calm["bits_per_second"]
    if tcp_bytes > 0:
        for role, seconds in tcp_cpu.items():
            if role in ("server", "client") and not record.get("setup_s"):
                continue  # the bare link has no VPN processes
            out[cpu_key(role)] = seconds / (tcp_bytes / 1e9)
    if "setup_s" in record:
        out["setup"] = record["setup_s"]
    return out


def _added_rtt(runs: list[dict]) -> None:
    """Round trip minus the bare link's in the same repetition (paired, not medians)."""
    bare = {r["rep"]: r["figures"].get("rtt") for r in runs if r["scenario"] == BARE}
    for r in runs:
        rtt, base = r["figures"].get("rtt"), bare.get(r["rep"])
        if rtt is not None and base is not None and r["scenario"] != BARE:
            r["figures"]["added_rtt"] = rtt - base


def _marginal(memory: dict[str, list[dict]]) -> dict[str, float]:
    """Bytes per extra peer between consecutive peer counts ("100-1000"), from the median
    growth of fresh servers: one-time costs paid with the first peer cancel out."""
    growth = {}
    for n, recs in memory.items():
        values = (r["memory_after"] - r["memory_before"] for r in recs if "memory_after" in r)
        if (m := median_of(summarize(values))) is not None:
            growth[int(n)] = m
    counts = sorted(growth)
    return {f"{a}-{b}": (growth[b] - growth[a]) / (b - a) for a, b in itertools.pairwise(counts)}


def summarize_run(doc: dict) -> dict:
    """Medians and spread per scenario and figure; ratios against the baselines; scale."""
    runs = doc.get("runs", [])
    _added_rtt(runs)
    summary: dict[str, dict] = {}
    for s in doc.get("scenarios", []):
        mine = [r["figures"] for r in runs if r["scenario"] == s["name"]]
        per = {f.key: summarize(m.get(f.key) for m in mine) for f in FIGURES}
        summary[s["name"]] = {k: v for k, v in per.items() if v is not None}
    ratios: dict[str, dict] = {}
    for name, figs in summary.items():
        for f in FIGURES:
            if not f.ratios or f.key not in figs:
                continue
            value = median_of(figs[f.key])
            base_user = median_of(summary.get(USERSPACE, {}).get(f.key))
            base_bare = median_of(summary.get(BARE, {}).get(f.key))
            ratios.setdefault(name, {})[f.key] = {
                "vs_userspace": ratio(value, base_user),
                "vs_bare": ratio(value, base_bare),
            }
    scale: dict[str, dict] = {}
    for rec in doc.get("scale", []):
        entry = scale.setdefault(rec["target"], {"label": rec["label"], "handshake": {},
                                                 "memory": {}})
        entry[rec["kind"]].setdefault(str(rec["peers"]), []).append(rec)
    scale_summary = {
        key: {
            "label": e["label"],
            "handshakes_per_s": {n: summarize(r.get("handshakes_per_s") for r in recs)
                                 for n, recs in e["handshake"].items()},
            "memory_per_peer": {n: summarize(r.get("memory_per_peer") for r in recs)
                                for n, recs in e["memory"].items()},
            "fill_handshakes_per_s": {n: summarize(r.get("handshakes_per_s") for r in recs)
                                      for n, recs in e["memory"].items()},
            "marginal_memory_per_peer": _marginal(e["memory"]),
        }
        for key, e in scale.items()
    }
    return {"summary": summary, "ratios": ratios, "scale_summary": scale_summary}
