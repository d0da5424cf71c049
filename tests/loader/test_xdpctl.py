"""`xdp-ovpn attach | detach | stats` as separate processes in a namespace."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from xdp_ovpn.xdpctl import parse_listen

CLI = [sys.executable, "-m", "xdp_ovpn.cli"]


def test_parse_listen_forms():
    assert parse_listen("10.0.0.1:1194") == ("10.0.0.1", 1194)
    assert parse_listen("[fd00::1]:1194") == ("fd00::1", 1194)
    assert parse_listen(":1194") == ("", 1194) == parse_listen("1194")
    for bad in ("10.0.0.1:0", "10.0.0.1:70000", "host:1194", "10.0.0.1:x"):
        with pytest.raises(click.BadParameter):
            parse_listen(bad)


def _attach(ns, *args: str) -> subprocess.Popen:
    proc = ns.popen([*CLI, "attach", "-i", "veth0", *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("attached to veth0"), line
    return proc


@pytest.mark.root
@pytest.mark.bpf
def test_stats_and_detach_from_other_processes(lab):
    gw, cl = lab.add_namespace("gw"), lab.add_namespace("cl")
    lab.link(gw, cl, addrs=("10.9.0.1/24", "10.9.0.2/24"))
    owner = _attach(gw, "-l", "10.9.0.1:1194", "--mode", "generic",
                    "--control-limit", "1", "2", "100", "200")
    # Three HARD_RESET_CLIENT_V2 (opcode 7) with 18 more bytes, from one socket in the other
    # namespace: the source's bucket of 2 lets two through.
    # (An unconnected socket: a connected one would fail a send on the port unreachable.)
    cl.run([sys.executable, "-c", "import socket; s = socket.socket(socket.AF_INET, "
            "socket.SOCK_DGRAM); [s.sendto(b'\\x38' + b'A' * 18, ('10.9.0.1', 1194)) "
            "for _ in range(3)]"])
    out = gw.run([*CLI, "stats", "-i", "veth0"]).stdout
    assert "HARD_RESET_CLIENT_V2             3" in out
    assert "pass_control                     2" in out
    assert "drop_control_source              1" in out
    assert "control limits: 1/s burst 2 a source, 100/s burst 200 in all" in out
    bad = gw.run([*CLI, "attach", "-i", "veth0", "-l", ":1194", "--control-limit",
                  "0", "1", "1", "1"], check=False)
    assert bad.returncode == 2 and "source rate must be 1..1000000, not 0" in bad.stderr
    busy = gw.run([*CLI, "attach", "-i", "veth0", "-l", ":1194"], check=False)
    assert busy.returncode == 1 and "already attached" in busy.stderr
    assert busy.stderr.count("\n") == 1  # one line, no traceback
    assert gw.run([*CLI, "detach", "-i", "veth0"]).stdout.strip() == "detached from veth0"
    assert " xdp" not in gw.run(["ip", "-o", "link", "show", "veth0"]).stdout
    none = gw.run([*CLI, "stats", "-i", "veth0"], check=False)
    assert none.returncode == 1 and "no XDP program is attached" in none.stderr
    assert gw.run([*CLI, "detach", "-i", "veth0"]).stdout.strip() == "nothing attached to veth0"
    owner.terminate()
    assert owner.wait(timeout=10) == 0
