"""Ctrl-C and SIGTERM for long lab commands (bench, demo): unwind, then sweep.

(A candidate for xdp_ovpn/lab/netns.py, where Lab could do the sweep itself.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def sigterm_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so every namespace and process is torn down."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def sweep_own_namespaces() -> None:
    """Remove namespaces of this process that an interrupt caught half-built.

    The lab tears down what it tracks; a signal between `ip netns add` and the lab
    recording the namespace would otherwise leave it behind.
    """
    from pyroute2 import netns

    prefix = f"xo{os.getpid()}-"
    for name in netns.listnetns():
        if name.startswith(prefix):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in pids.stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                netns.remove(name)
