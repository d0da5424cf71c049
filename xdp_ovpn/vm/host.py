"""Host tools the harness needs, installed from Debian on first use (idempotent)."""

from __future__ import annotations

import os
import shutil
import subprocess

from xdp_ovpn.vm.errors import HostSetupError

# command -> Debian package that provides it
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "debootstrap": "debootstrap",
}


def ensure_host_tools() -> None:
    """apt-get install whatever of HOST_TOOLS is missing; a no-op when all are present."""
    missing = sorted({pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        raise HostSetupError(f"missing {', '.join(missing)} and not root to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            last = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["?"]
            raise HostSetupError(f"{' '.join(cmd[:2])} failed: {last[0]}")
