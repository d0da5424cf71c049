"""CI smoke test for the VM harness: one kernel, boot, BPF attach, AF_XDP bind.

Keeps the harness from rotting; the full feature x kernel matrix is `xdp-ovpn vmtest --matrix`.
The first run builds the guest root and the kernel (a few minutes, cached afterwards).
"""

from __future__ import annotations

import json

import pytest

from xdp_ovpn.vm import GuestTimeout, run_in_vm
from xdp_ovpn.vm.matrix import RESULT_PREFIX

SMOKE_KERNEL = "6.1"

pytestmark = pytest.mark.vm


def _cells(output: str) -> dict:
    lines = [ln for ln in output.splitlines() if ln.startswith(RESULT_PREFIX)]
    assert lines, f"probe printed no result:\n{output[-2000:]}"
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def test_guest_kernel_attaches_xdp_and_binds_afxdp() -> None:
    run = run_in_vm(SMOKE_KERNEL, ["python3", "-m", "xdp_ovpn.vm.guest.probe", "--quick"],
                    timeout=900)
    result = _cells(run.output)
    assert result["release"].startswith(SMOKE_KERNEL + ".")  # really the guest's kernel
    cells = result["cells"]
    for name in ("bcc compile", "XDP native", "XDP generic", "AF_XDP bind"):
        assert cells[name]["status"] == "ok", f"{name}: {cells[name]['detail']}"
    assert run.returncode == 0


def test_guest_exit_status_and_output_come_back() -> None:
    run = run_in_vm(SMOKE_KERNEL, ["sh", "-c", "echo from-guest; uname -r; exit 7"],
                    timeout=300)
    assert run.returncode == 7
    lines = run.output.splitlines()
    assert lines[0] == "from-guest"
    assert lines[1].startswith(SMOKE_KERNEL + ".")


def test_hung_guest_is_killed_with_a_clear_message() -> None:
    with pytest.raises(GuestTimeout, match="did not finish within"):
        run_in_vm(SMOKE_KERNEL, ["sleep", "3600"], timeout=20)
