"""Run commands from the project tree inside qemu guests booting other Debian kernels.

`run_in_vm("6.1", ["python3", "-m", "xdp_ovpn.doctor"])` builds (once, cached) a Debian guest
root with the project's dependencies (bookworm; sid for 7.2), installs the newest Debian 6.1
kernel with headers and modules, boots it (KVM if it really works, else TCG) with the project
tree shared read-only at its host path, runs the command there and returns its output and
exit status.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from xdp_ovpn.vm.accel import choose_accel
from xdp_ovpn.vm.cache import cache_dir
from xdp_ovpn.vm.errors import GuestTimeout, VMError
from xdp_ovpn.vm.host import ensure_host_tools
from xdp_ovpn.vm.kernels import Kernel, check_version, ensure_kernel, root_flavour
from xdp_ovpn.vm.native import ensure_native
from xdp_ovpn.vm.qemu import GuestRun, boot
from xdp_ovpn.vm.rootfs import ensure_root

PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_TIMEOUT = 600.0

__all__ = ["PROJECT", "GuestRun", "GuestTimeout", "Kernel", "VMError", "prepare", "run_in_vm"]


def prepare(version: str, log: Path | None = None) -> tuple[Path, Kernel]:
    """Make sure the host tools, the guest root and kernel `version` exist; cached."""
    check_version(version)
    ensure_host_tools()
    cache = cache_dir()
    log = log or cache / "build.log"
    flavour = root_flavour(version)
    root = ensure_root(cache, log, flavour)
    kernel = ensure_kernel(cache, root, version, log)
    ensure_native(root, flavour, PROJECT, log)
    return root, kernel


def run_in_vm(version: str, command: list[str], *, timeout: float = DEFAULT_TIMEOUT,
              env: dict[str, str] | None = None, echo: TextIO | None = None) -> GuestRun:
    """Boot Debian kernel `version` and run `command` in the project tree; see module doc."""
    root, kernel = prepare(version)

    def probe(accel: str, probe_timeout: float) -> bool:
        try:
            return boot(kernel.vmlinuz, kernel.initrd, root, PROJECT, ["true"], accel=accel,
                        timeout=probe_timeout).returncode == 0
        except VMError:
            return False

    accel, _why = choose_accel(cache_dir(), kernel.release, probe)
    return boot(kernel.vmlinuz, kernel.initrd, root, PROJECT, command, accel=accel,
                timeout=timeout, env=env, echo=echo)
