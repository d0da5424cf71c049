"""Choose the qemu accelerator: KVM only where it really boots our kernels, TCG otherwise.

`/dev/kvm` existing proves little: under nested PVM ("kvm_pvm" loaded) stock kernels do not
boot at all. So KVM is chosen only after a real probe boot of the kernel under test succeeds;
the verdict is cached per host kernel and guest kernel. $XDP_OVPN_VM_ACCEL=kvm|tcg overrides.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

ENV_ACCEL = "XDP_OVPN_VM_ACCEL"
PROBE_TIMEOUT = 60.0
PVM_MARKER = Path("/sys/module/kvm_pvm")


def choose_accel(cache: Path, release: str, probe_boot: Callable[[str, float], bool]
                 ) -> tuple[str, str]:
    """Return (accel, why). `probe_boot(accel, timeout)` boots the kernel running `true`."""
    if forced := os.environ.get(ENV_ACCEL):
        if forced not in ("kvm", "tcg"):
            raise ValueError(f"${ENV_ACCEL} must be kvm or tcg, not {forced!r}")
        return forced, f"forced by ${ENV_ACCEL}"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    if PVM_MARKER.exists():
        return "tcg", "/dev/kvm is nested PVM (kvm_pvm), which cannot boot stock kernels"
    verdicts = cache / "accel.json"
    key = f"{platform.release()} {release}"
    try:
        known = json.loads(verdicts.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known[key] = probe_boot("kvm", PROBE_TIMEOUT)
        verdicts.write_text(json.dumps(known, indent=1))
    if known[key]:
        return "kvm", "a probe boot under KVM succeeded"
    return "tcg", "a probe boot under KVM failed (cached in accel.json)"
