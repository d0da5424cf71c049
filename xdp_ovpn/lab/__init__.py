"""Network-namespace topologies for tests, the demo and the benchmark."""

from xdp_ovpn.lab.netns import (
    Lab,
    LabError,
    Namespace,
    cleanup_stale,
    interrupt_on_sigterm,
    sweep_own_namespaces,
)

__all__ = [
    "Lab",
    "LabError",
    "Namespace",
    "cleanup_stale",
    "interrupt_on_sigterm",
    "sweep_own_namespaces",
]
