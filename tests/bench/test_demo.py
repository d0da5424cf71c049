"""`xdp-ovpn lab demo`: the summary's verdict, and the whole demo against real openvpn 2.6."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from xdp_ovpn.dataplane.factory import xdp_unavailable
from xdp_ovpn.demo import Outcome, summarize

PING_OK = {"sent": 5.0, "received": 5.0, "rtt_avg_ms": 0.4, "lost_percent": 0.0}
IPERF_OK = {"bits_per_second": 4e8, "seconds": 1.0, "bytes": 5e7, "retransmits": 0.0}
XDP_COUNTERS = {"verdicts": {"redirect": 1234, "pass_control": 9},
                "opcodes": {"DATA_V2": 1234, "CONTROL_V1": 9}, "peers": {"0": [1234, 1_700_000]}}


def test_xdp_verdict_needs_redirected_data_packets():
    rows, worked, verdict = summarize(Outcome("xdp", "", None, 1.0, PING_OK, IPERF_OK,
                                              XDP_COUNTERS))
    assert worked and "1,234 DATA_V2 packets were redirected" in verdict
    assert ("XDP verdicts", "redirect 1,234 · pass 9 · drop 0") in rows
    nothing = XDP_COUNTERS | {"verdicts": {"pass_control": 9}}
    _, worked, verdict = summarize(Outcome("xdp", "", None, 1.0, PING_OK, IPERF_OK, nothing))
    assert not worked and "no DATA_V2 packet was redirected" in verdict


def test_socket_path_and_failures_say_so():
    _, worked, verdict = summarize(Outcome("socket", "", None, 1.0, PING_OK, IPERF_OK))
    assert worked and "socket data path (not over XDP)" in verdict
    lost = PING_OK | {"received": 0.0}
    _, worked, verdict = summarize(Outcome("xdp", "", None, 1.0, lost, IPERF_OK, XDP_COUNTERS))
    assert not worked and "ping failed" in verdict
    _, worked, verdict = summarize(Outcome("xdp", "", None, 1.0, PING_OK, {"error": "x"}))
    assert not worked and "iperf3 failed" in verdict


@pytest.mark.root
@pytest.mark.bpf
@pytest.mark.openvpn
def test_demo_carries_the_tunnel_over_xdp():
    if reason := xdp_unavailable():
        pytest.skip(f"XDP data path unavailable: {reason}")
    cmd = [sys.executable, "-m", "xdp_ovpn.cli", "lab", "demo", "--seconds", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Summary" in out
    assert re.search(r"ping\s+5/5 replies", out), out
    assert re.search(r"iperf3\s+[\d,]+ Mbit/s", out), out
    found = re.search(r"XDP verdicts\s+redirect ([\d,]+)", out)
    assert found and int(found[1].replace(",", "")) > 0, out
    assert re.search(r"per opcode\s+.*DATA_V2 [\d,]+", out), out
    assert "the tunnel worked over XDP" in out


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.root
@pytest.mark.openvpn
def test_ctrl_c_tears_the_demo_down():
    from xdp_ovpn.lab.netns import NETNS_DIR

    cmd = [sys.executable, "-m", "xdp_ovpn.cli", "lab", "demo", "--data-path", "socket",
           "--seconds", "30"]
    # Ctrl-C's default meaning, whatever this run inherited: a shell without job control
    # starts background jobs with SIGINT ignored, and Python then installs no handler.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_default_sigint)
    assert proc.stdout is not None
    seen_iperf = False
    for line in proc.stdout:  # interrupt in the middle of the iperf3 run: once its first
        seen_iperf = seen_iperf or "iperf3" in line  # progress line is out
        if seen_iperf and re.match(r"\s+\d+\.\d s", line):
            break
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out[-2000:]
    assert "interrupted" in out
    assert list(NETNS_DIR.glob(f"xo{proc.pid}-*")) == []
