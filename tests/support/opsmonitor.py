"""openvpn-monitor (PyPI, a test-only dependency) as the management/status client under test.

Its modules import each other as top-level packages (`from util import ...`), so its
directory goes on sys.path. ImportError when it is not installed: callers importorskip this.
"""

from __future__ import annotations

import importlib.util
import sys

_spec = importlib.util.find_spec("openvpn_monitor")
if _spec is None or not _spec.submodule_search_locations:
    raise ImportError("openvpn-monitor is not installed (pip install '.[test]')")
_DIR = next(iter(_spec.submodule_search_locations))
if _DIR not in sys.path:
    sys.path.append(_DIR)

import semver  # noqa: E402  (openvpn-monitor's own dependency)
from vpns.openvpn.data_collector import VPNDataCollector  # noqa: E402


class Collector(VPNDataCollector):
    """openvpn-monitor's collector without its collect-everything constructor."""

    def __init__(self) -> None:
        self.vpns = {}

    @staticmethod
    def version_info(release: str):
        return semver.VersionInfo.parse(release)

    def collect(self, host: str, port: int | None = None, socket: str | None = None) -> dict:
        """Connect as openvpn-monitor does and return what it gathered (sessions, stats...)."""
        vpn: dict = {"name": "xdp-ovpn", "host": host, "port": port, "socket": socket}
        if socket:
            vpn.pop("host")
        self.collect_data(vpn, None)
        return vpn


def collector() -> Collector:
    return Collector()
