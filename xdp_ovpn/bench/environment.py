"""Where a run happened: machine, kernel, tool versions, load. Recorded with every result."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from xdp_ovpn import __version__

_ROOT = Path(__file__).resolve().parents[2]


def _first_line(cmd: list[str], pattern: str | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    if pattern:
        found = re.search(pattern, text)
        return found[0] if found else None
    return text.splitlines()[0] if text else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(kb / 2**20, 1)


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict:
    """A JSON-ready description of this machine and the software under test."""
    try:
        distro = Path("/etc/debian_version").read_text().strip()
    except OSError:
        distro = None
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "arch": platform.machine(),
        "debian": distro,
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": {
            "xdp-ovpn": __version__,
            "git_commit": _first_line(["git", "-C", str(_ROOT), "rev-parse", "HEAD"]),
            "git_dirty": bool(_first_line(["git", "-C", str(_ROOT), "status", "--porcelain"])),
            "python": sys.version.split()[0],
            "openvpn": _first_line(["openvpn", "--version"], r"OpenVPN \S+"),
            "iperf3": _first_line(["iperf3", "--version"], r"iperf \S+"),
            "cryptography": _package_version("cryptography"),
            "matplotlib": _package_version("matplotlib"),
        },
    }
