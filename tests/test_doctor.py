import os
import subprocess
import sys

import pytest

from xdp_ovpn.doctor import FAIL, Check, missing, render

pytestmark = [pytest.mark.root, pytest.mark.bpf]


def _doctor(env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "xdp_ovpn.cli", "doctor"],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_doctor_reports_xdp_and_afxdp_and_exits_zero():
    out = _doctor()
    assert out.returncode == 0, out.stdout + out.stderr
    table = out.stdout
    for row in ("XDP native", "XDP generic", "AF_XDP bind", "bcc compile", "TUN"):
        line = next(line for line in table.splitlines() if line.startswith(row))
        assert " ok " in line, line
    afxdp = next(line for line in table.splitlines() if line.startswith("AF_XDP bind"))
    # Probed on a veth made as `ip link add` makes it, every queue in use bound.
    assert "copy" in afxdp and "plain veth" in afxdp and "every queue bound" in afxdp, afxdp
    path = next(line for line in table.splitlines() if line.startswith("data path"))
    assert " ok " in path and "xdp" in path, path
    assert "Traceback" not in out.stderr


def test_doctor_without_headers_exits_one_naming_them(tmp_path):
    out = _doctor({"XDP_OVPN_KERNEL_HEADERS": str(tmp_path)})
    assert out.returncode == 1, out.stdout
    assert "missing: kernel headers:" in out.stdout
    path = next(line for line in out.stdout.splitlines() if line.startswith("data path"))
    assert "socket" in path and "kernel headers" in path, path
    assert "Traceback" not in out.stdout + out.stderr


def test_missing_lists_unprobed_requirements():
    checks = [Check("BPF syscall", "ok", "")]
    names = {c.name for c in missing(checks)}
    assert {"bcc", "XDP attach", "AF_XDP bind"} <= names
    assert all(c.status == FAIL for c in missing(checks))
    assert "BPF syscall" in render(checks)
