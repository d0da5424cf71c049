"""Shared fixtures and the capability gates for root, BPF and openvpn tests.

Without a capability a marked test is skipped with the reason; under CI
(CI=true, running as root) a missing capability is an error, so the suite
can never pass by skipping what it was meant to run.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

from xdp_ovpn.lab import Lab, cleanup_stale, interrupt_on_sigterm
from xdp_ovpn.vm.pace import slowdown


@functools.cache
def _missing_root() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


@functools.cache
def _missing_bpf() -> str | None:
    if reason := _missing_root():
        return reason
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "needs bcc (Debian's python3-bpfcc)"
    return None


@functools.cache
def _missing_openvpn() -> str | None:
    if reason := _missing_root():
        return reason
    if shutil.which("openvpn") is None:
        return "needs the openvpn binary"
    out = subprocess.run(["openvpn", "--version"], capture_output=True, text=True)
    # The peer the suite is written against; 2.7 serves too (the 7.2 guest's sid userland).
    if "OpenVPN 2.6" not in out.stdout and "OpenVPN 2.7" not in out.stdout:
        return "needs openvpn 2.6 or 2.7"
    return None


@functools.cache
def _missing_openvpn27() -> str | None:
    if reason := _missing_root():
        return reason
    from xdp_ovpn.lab import sidroot
    from xdp_ovpn.vm.errors import BuildError

    if not sidroot.is_built() and shutil.which("debootstrap") is None:
        return "needs debootstrap to build the Debian sid root with openvpn 2.7"
    try:
        sidroot.ensure_root()  # the first time: debootstrap, about 3 minutes
    except BuildError as exc:
        return f"has no openvpn 2.7 root ({exc})"
    return None


@functools.cache
def _missing_vm() -> str | None:
    if os.environ.get("XDP_OVPN_IN_VM"):
        return "already inside a test VM"
    if reason := _missing_root():
        return reason
    # A TCG guest costs minutes of both cores: opt-in locally, always on under CI.
    if not (os.environ.get("CI") or os.environ.get("XDP_OVPN_VM_TESTS")):
        return "boots a VM (minutes under TCG): runs under CI or with XDP_OVPN_VM_TESTS=1"
    return None


_GATES = {
    "root": _missing_root,
    "bpf": _missing_bpf,
    "openvpn": _missing_openvpn,
    "openvpn27": _missing_openvpn27,
    "vm": _missing_vm,
}


# How much slower than the host a CPU may be (vm.pace) for a realtime test to run on it.
REALTIME_SLOWDOWN = 3.0


def pytest_runtest_setup(item: pytest.Item) -> None:
    if (mark := item.get_closest_marker("realtime")) and slowdown() > REALTIME_SLOWDOWN:
        pytest.skip(f"{mark.args[0]}; this CPU is {slowdown():.0f}x slower than the host's")
    for marker, missing in _GATES.items():
        if item.get_closest_marker(marker) and (reason := missing()):
            if os.environ.get("CI"):
                pytest.fail(f"CI must run this test but it {reason}")
            pytest.skip(reason)


def pytest_sessionstart(session: pytest.Session) -> None:
    # SIGTERM (a CI timeout, a kill) unwinds like Ctrl-C, so lab fixtures still tear down.
    interrupt_on_sigterm()
    if os.geteuid() == 0:
        cleanup_stale()


@pytest.fixture
def lab():
    """A fresh namespace topology, torn down even when the test fails."""
    with Lab() as topology:
        yield topology
