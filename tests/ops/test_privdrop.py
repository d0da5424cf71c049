"""Privilege drop (`user`/`group`), readiness notification, and the systemd unit."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xdp_ovpn.config import directives_from_args
from xdp_ovpn.control.privdrop import PrivilegeError, resolve
from xdp_ovpn.control.sdnotify import notify

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "contrib" / "systemd" / "xdp-ovpn-server@.service"
OPENVPN_UNIT = Path("/lib/systemd/system/openvpn-server@.service")


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_unknown_user_or_group_is_a_one_line_error():
    with pytest.raises(PrivilegeError, match="no such user 'no-such-user-xo'"):
        resolve("no-such-user-xo", None)
    with pytest.raises(PrivilegeError, match="no such group 'no-such-group-xo'"):
        resolve(None, "no-such-group-xo")


@pytest.mark.root
def test_drop_to_nobody_sets_uid_gid_and_groups():
    out = run_python(
        "import os\n"
        "from xdp_ovpn.control.privdrop import drop_privileges, has_net_admin\n"
        "drop_privileges('nobody', 'nogroup')\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups(), has_net_admin())\n"
        "os.setuid(0)\n"
    )
    assert out.returncode != 0 and "PermissionError" in out.stderr  # no way back
    assert out.stdout.strip().split(maxsplit=3) == ["65534", "65534", "65534", "[65534] False"]


@pytest.mark.root
def test_keep_net_admin_survives_the_switch_and_can_add_routes():
    """The server adds iroute kernel routes after dropping root: CAP_NET_ADMIN stays."""
    ns = f"xoops{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, sys.executable, "-c",
             "import os, subprocess\n"
             "from xdp_ovpn.control.privdrop import drop_privileges, has_net_admin\n"
             "drop_privileges('nobody', None, keep={12})\n"
             "assert os.getuid() == 65534 and has_net_admin()\n"
             "from pyroute2 import IPRoute\n"
             "with IPRoute() as ipr:\n"
             "    ipr.link('set', index=1, state='up')\n"
             "    ipr.route('add', dst='192.0.2.0/24', oif=1)\n"],
            capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        routes = subprocess.run(["ip", "-n", ns, "route", "show", "table", "main"],
                                capture_output=True, text=True).stdout
        assert "192.0.2.0/24" in routes
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def test_sd_notify_sends_one_datagram(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1", "STATUS=Initialization Sequence Completed")
        assert sock.recv(1024) == b"READY=1\nSTATUS=Initialization Sequence Completed"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("READY=1")


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


def test_unit_runs_like_openvpns_with_the_same_directory_and_status_file():
    ours = _unit(UNIT)["Service"]
    argv = shlex.split(ours["ExecStart"])
    assert argv[:4] == ["/usr/local/bin/xdp-ovpn", "run", "--config", "%i.conf"]
    # The extra options are openvpn options our parser knows.
    names = [d.name for d in directives_from_args(argv[4:])]
    assert names == ["status", "status-version", "suppress-timestamps"]
    if OPENVPN_UNIT.exists():
        theirs = _unit(OPENVPN_UNIT)["Service"]
        for key in ("Type", "WorkingDirectory", "PrivateTmp", "ProtectSystem", "Restart"):
            assert ours[key] == theirs[key], key
        their_argv = shlex.split(theirs["ExecStart"])
        assert argv[4:] == their_argv[1:-2]  # --status ... --suppress-timestamps
        assert set(theirs["CapabilityBoundingSet"].split()) < set(
            ours["CapabilityBoundingSet"].split())


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    exe = Path(sys.executable).parent / "xdp-ovpn"
    if not exe.exists():
        pytest.skip("the xdp-ovpn entry point is not installed")
    text = UNIT.read_text().replace("/usr/local/bin/xdp-ovpn", str(exe))
    unit = tmp_path / "xdp-ovpn-server@test.service"
    unit.write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
