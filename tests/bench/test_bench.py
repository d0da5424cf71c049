"""The benchmark harness: parsers, statistics, report structure, and a tiny real run.

The tiny run checks the shape of what `xdp-ovpn bench` writes (JSON, Markdown, PNG),
never the numbers: the benchmark reports speed, it does not assert it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from xdp_ovpn.bench import measure, report, runner, scenarios, stats
from xdp_ovpn.lab.netns import NETNS_DIR

# Trimmed from iperf3 3.12 --json output on this project's lab machine.
IPERF3_TCP = {"end": {
    "sum_sent": {"seconds": 2.0, "bytes": 4_064_935_936, "bits_per_second": 1.6e10,
                 "retransmits": 10406, "sender": True},
    "sum_received": {"seconds": 2.0, "bytes": 4_000_000_000, "bits_per_second": 1.6e10,
                     "sender": True},
}}
IPERF3_UDP = {"end": {
    "sum_sent": {"seconds": 1.0, "bytes": 3_816_448, "packets": 59632, "lost_packets": 0,
                 "bits_per_second": 3.0e7, "sender": True},
    "sum_received": {"seconds": 1.0, "bytes": 2_579_648, "packets": 59626, "lost_packets": 19319,
                     "jitter_ms": 0.0036, "bits_per_second": 2.0e7, "sender": False},
}}
PING = """--- 10.8.0.1 ping statistics ---
20 packets transmitted, 19 received, 5% packet loss, time 401ms
rtt min/avg/max/mdev = 0.216/0.292/1.251/0.220 ms
"""


def test_iperf3_tcp_figures_are_the_receivers():
    r = measure.parse_iperf3(json.dumps(IPERF3_TCP))
    assert r["bytes"] == 4_000_000_000 and r["retransmits"] == 10406
    assert "received_pps" not in r


def test_iperf3_udp_counts_lost_packets_at_the_receiver():
    r = measure.parse_iperf3(json.dumps(IPERF3_UDP))
    assert r["received_pps"] == pytest.approx(59626 - 19319)
    assert r["lost_percent"] == pytest.approx(100 * 19319 / 59626)
    assert r["sent_pps"] == pytest.approx(59632)


@pytest.mark.parametrize("text", ["", "not json", json.dumps({"error": "unable to connect"}),
                                  json.dumps({"end": {}})])
def test_iperf3_failure_is_a_typed_error(text):
    with pytest.raises(measure.MeasureError):
        measure.parse_iperf3(text)


def test_iperf3_duration_is_whole_seconds_never_forever():
    cmd = measure.iperf3_command("10.8.0.1", 0.4, udp_len=64, udp_pps=1000)
    assert cmd[cmd.index("-t") + 1] == "1"
    assert cmd[cmd.index("-b") + 1] == str(64 * 8 * 1000)


def test_ping_summary():
    r = measure.parse_ping(PING)
    assert r["rtt_avg_ms"] == 0.292 and r["lost_percent"] == 5.0
    with pytest.raises(measure.MeasureError):
        measure.parse_ping("ping: connect: Network is unreachable")


def test_own_process_tree_cpu_and_memory():
    assert os.getpid() in measure.process_tree(os.getpid())
    assert measure.cpu_seconds(os.getpid()) > 0
    assert measure.memory_bytes(os.getpid()) > 1 << 20


def test_machine_cpu_includes_what_a_process_burns():
    meter = measure.CpuMeter({"self": os.getpid()})
    meter.start()
    began = time.process_time()
    while time.process_time() - began < 0.3:  # burn CPU, not wall time
        pass
    spent = meter.stop()
    assert spent["self"] > 0.2
    assert spent[measure.MACHINE] >= spent["self"] - 0.05  # /proc/stat ticks are coarse


def test_summary_median_spread_and_ratio():
    s = stats.summarize([3.0, None, 1.0, 2.0])
    assert (s["n"], s["median"], s["min"], s["max"]) == (3, 2.0, 1.0, 3.0)
    assert s["spread_pct"] == 100.0
    assert stats.summarize([None]) is None
    assert stats.ratio(1.0, 0) is None and stats.ratio(1.0, 4.0) == 0.25


def test_selection_keeps_the_baselines_and_refuses_unknown_names():
    names = [s.name for s in scenarios.select("socket-socket")]
    assert names == [scenarios.BARE, scenarios.USERSPACE, "socket-socket"]
    with pytest.raises(ValueError, match="nope"):
        scenarios.select("nope")


def synthetic_run() -> dict:
    """A run document as the runner writes it, two repetitions, one unavailable scenario."""
    runs = []
    for rep in range(2):
        for name, mbps, rtt in (("bare", 10_000, 0.05), ("openvpn", 500, 0.3)):
            record = {"scenario": name, "rep": rep, "tests": {
                "ping": {"rtt_avg_ms": rtt + rep * 0.01},
                "tcp_up_1": {"bits_per_second": (mbps + rep) * 1e6, "bytes": 1e9,
                             "cpu_s": {"server": 10.0, "client": 9.0, "iperf3-server": 1.0,
                                       "iperf3-client": 1.0}},
                "udp_64": {"received_pps": 40_000.0, "lost_percent": 2.0},
            }, "errors": {}}
            if name != "bare":
                record["setup_s"] = 0.5
            record["figures"] = runner.figures_of(record)
            runs.append(record)
    doc = {
        "schema": runner.SCHEMA, "started": "now", "config": {"udp_sizes": [64]},
        "environment": {"kernel": "6.18", "versions": {}},
        "scenarios": [
            {"name": "bare", "label": "bare veth", "available": True},
            {"name": "openvpn", "label": "openvpn ↔ openvpn", "available": True},
            {"name": "xdp-xdp", "label": "xdp", "available": False, "unavailable": "not yet"},
        ],
        "runs": runs,
        "scale": [{"target": "openvpn", "label": "openvpn server", "kind": kind, "peers": n,
                   "rep": 0, "handshakes_per_s": 100.0, "memory_per_peer": 100_000.0,
                   "memory_before": 1_000_000, "memory_after": 1_000_000 + 100_000 * n + 50_000}
                  for kind, n in (("handshake", 20), ("memory", 1), ("memory", 100))],
    }
    return doc | runner.summarize_run(doc)


def test_summary_ratios_and_added_latency_are_computed_within_the_run():
    doc = synthetic_run()
    vpn = doc["summary"]["openvpn"]
    assert vpn["tcp_up_1"]["median"] == pytest.approx(500.5)
    assert vpn["added_rtt"]["median"] == pytest.approx(0.25)
    assert vpn["cpu_server"]["median"] == pytest.approx(10.0)  # s per 10^9 bytes
    assert "cpu_server" not in doc["summary"]["bare"]
    r = doc["ratios"]["openvpn"]["tcp_up_1"]
    assert r["vs_userspace"] == 1.0 and r["vs_bare"] == pytest.approx(500.5 / 10_000.5)
    assert doc["summary"]["xdp-xdp"] == {}
    scale = doc["scale_summary"]["openvpn"]
    assert set(scale["memory_per_peer"]) == {"1", "100"}
    assert scale["handshakes_per_s"]["20"]["median"] == 100.0
    assert scale["marginal_memory_per_peer"] == {"1-100": pytest.approx(100_000.0)}


def test_markdown_names_unavailable_scenarios_and_every_question():
    text = report.markdown(synthetic_run())
    assert "| `xdp-xdp` | xdp | unavailable: not yet |" in text
    for heading in ("## TCP throughput", "## UDP packets", "## Ping latency", "## CPU seconds",
                    "## Ratios", "## Handshakes per second", "## Server memory per",
                    "| openvpn server | 97.7 |"):  # marginal KiB per peer, 1 to 100 peers
        assert heading in text


def test_compare_puts_two_runs_side_by_side(tmp_path):
    a, b = synthetic_run(), synthetic_run()
    b["summary"]["openvpn"]["tcp_up_1"]["median"] = 1001.0
    path = tmp_path / "a.json"
    report.write_json(a, path)
    text = report.compare(report.load(path), b, "a.json", "b.json")
    assert "| openvpn | TCP client→server, 1 stream (Mbit/s) | 500 | 1,001 | +100 % |" in text
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(report.ReportError):
        report.load(tmp_path / "junk.json")


def test_charts_are_pngs_one_per_question(tmp_path):
    pytest.importorskip("matplotlib", reason="charts need the bench extra (matplotlib)")
    from xdp_ovpn.bench.charts import render

    paths = render(synthetic_run(), tmp_path)
    assert {p.name for p in paths} == {"tcp.png", "udp.png", "latency.png", "cpu.png",
                                       "handshakes.png", "memory.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


def _bench(*args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "xdp_ovpn.cli", "bench", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


TINY = ("--repetitions", "1", "--seconds", "1", "--peers", "1,3", "--handshake-clients", "2",
        "--udp-pps", "2000")


@pytest.mark.root
@pytest.mark.openvpn
@pytest.mark.slow
def test_tiny_run_writes_json_markdown_and_charts(tmp_path):
    pytest.importorskip("matplotlib", reason="charts need the bench extra (matplotlib)")
    proc = _bench(*TINY, "--scenarios", "bare,openvpn,xdp-xdp", "--out", str(tmp_path))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["schema"] == runner.SCHEMA
    assert {"kernel", "cpus", "versions"} <= doc["environment"].keys()
    assert doc["environment"]["versions"]["openvpn"].startswith("OpenVPN 2.6")
    assert doc["config"]["repetitions"] == 1 and doc["config"]["peer_counts"] == [1, 3]
    assert "data-ciphers AES-256-GCM" in doc["tunnel"]["server_config"]
    assert "BEGIN" not in json.dumps(doc["tunnel"])  # no private key or certificate kept
    listed = {s["name"]: s for s in doc["scenarios"]}
    assert set(listed) == {"bare", "openvpn", "xdp-xdp"}
    ran = [name for name, s in listed.items() if s["available"]]
    for s in listed.values():  # a scenario that cannot run says why, and the run goes on
        assert s["available"] or s["unavailable"]
    assert sorted(r["scenario"] for r in doc["runs"]) == sorted(ran)
    for r in doc["runs"]:
        assert "error" not in r, r
        assert {"ping", "tcp_up_1", "tcp_up_4", "tcp_down_1", "tcp_down_4", "udp_64",
                "udp_1400"} <= r["tests"].keys()
    assert {"tcp_up_1", "udp_64_pps", "udp_1400_loss", "rtt"} <= doc["summary"]["bare"].keys()
    assert {"added_rtt", "cpu_server", "setup"} <= doc["summary"]["openvpn"].keys()
    assert doc["ratios"]["openvpn"]["tcp_up_1"]["vs_userspace"] == 1.0
    assert "1" in doc["scale_summary"]["openvpn"]["memory_per_peer"]
    assert all(rec.get("established") == rec["peers"] for rec in doc["scale"]), doc["scale"]
    text = (tmp_path / "bench.md").read_text()
    assert "## TCP throughput" in text and "## Server memory per" in text
    for chart in ("tcp", "udp", "latency", "cpu", "handshakes", "memory"):
        assert (tmp_path / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"


def _lab_namespaces(pid: int) -> list[str]:
    return [p.name for p in NETNS_DIR.glob(f"xo{pid}-*")] if NETNS_DIR.exists() else []


@pytest.mark.root
@pytest.mark.openvpn
def test_sigterm_tears_everything_down_and_keeps_partial_results(tmp_path):
    proc = _bench(*TINY, "--scenarios", "openvpn", "--out", str(tmp_path), "--no-charts")
    deadline = time.monotonic() + 60
    while not _lab_namespaces(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _lab_namespaces(proc.pid), "the bench never built its lab"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-2000:]
    assert _lab_namespaces(proc.pid) == []
    assert json.loads((tmp_path / "bench.json").read_text())["interrupted"] is True


@pytest.mark.root
@pytest.mark.openvpn
def test_a_scenario_that_fails_records_its_error_and_the_run_goes_on():
    from xdp_ovpn.lab.openvpn import TunnelSpec
    from xdp_ovpn.lab.pki import PKI

    broken = scenarios.Scenario("broken", "server refuses its data path", "xdp-ovpn", "openvpn",
                                "no-such-path")
    bench = runner.Runner(runner.BenchConfig.quick(timeout=10), progress=lambda _: None)
    record = bench.run_scenario(broken, 0, TunnelSpec(PKI(), network6=None))
    assert "exited" in record["error"]
    assert record["tests"] == {} and record["figures"] == {}
    assert _lab_namespaces(os.getpid()) == []


def test_flood_figures_and_the_xdp_verdicts_table():
    doc = synthetic_run()
    verdicts = {"drop_unknown_peer": 900, "drop_control_global": 800, "pass_control": 50}
    for r in doc["runs"]:
        if r["scenario"] == "openvpn":
            r["tests"]["flood_tcp_up_1"] = {
                "bits_per_second": 400e6, "bytes": 1e8,
                "flood": {"pps": 20_000, "sent": {"data_v2": 1000, "control": 1000},
                          "xdp_verdicts": verdicts}}
            r["figures"] = runner.figures_of(r)
    doc |= runner.summarize_run(doc)
    figures = doc["summary"]["openvpn"]
    assert figures["flood_tcp_up_1"]["median"] == pytest.approx(400.0)
    assert figures["flood_kept"]["median"] == pytest.approx(100 * 400 / 500.5, rel=1e-3)
    assert figures["tcp_up_1"]["median"] == pytest.approx(500.5)  # the calm run's, untouched
    text = report.markdown(doc)
    assert "## TCP throughput while a hostile mix floods" in text
    assert "| openvpn | 20,000 | 2,000 | 900 | 0 | 0 | 800 | 0 | 0 | 50 |" in text


def test_workers_reach_the_xdp_endpoints_on_a_veth_with_two_queues_at_least():
    class _Endpoint:
        program = "xdp-ovpn"

        def command(self):
            return ["xdp-ovpn", "run"]

    on_xdp = scenarios.with_data_path(_Endpoint(), "xdp", "native", workers=2).command()
    on_socket = scenarios.with_data_path(_Endpoint(), "socket", "native", workers=2).command()
    assert on_xdp[-2:] == ["--workers", "2"] and "--workers" not in on_socket
    assert [scenarios.workers_queues(n) for n in (None, 1, 2, 4)] == [None, 2, 2, 4]
    assert "1 data-plane worker(s) on XDP (veth with 2 queues)" in report._workers({"workers": 1})


def test_one_and_two_workers_share_the_run_and_its_topology():
    by_name = scenarios.BY_NAME
    one, two = by_name["xdp-xdp"], by_name["xdp-xdp-2w"]
    assert (one.workers, two.workers) == (None, 2)
    # a run with a two-worker scenario gives every scenario the veth with two queues
    assert scenarios.run_queues([by_name["openvpn"], one, two], None) == 2
    assert scenarios.run_queues([by_name["openvpn"], one], None) is None
    assert scenarios.run_queues([one], 4) == 4
    assert "veth with 2 queues" in report._workers({}, 2)
    run = runner.Runner(runner.BenchConfig(engine="python"), progress=lambda _: None)
    run.doc = {"scenarios": []}
    assert two not in run._available([two])
    assert "needs the native engine" in run.doc["scenarios"][-1]["unavailable"]
