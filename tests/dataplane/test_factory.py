"""`--data-path`: which data plane opens, and what it says about options it cannot honour."""

from __future__ import annotations

import logging
import re
import socket

import pytest

from xdp_ovpn.dataplane.api import DataPlaneError
from xdp_ovpn.dataplane.engine import native_available
from xdp_ovpn.dataplane.factory import open_dataplane
from xdp_ovpn.loader.maps import DEFAULT_CONTROL_LIMITS, ControlLimits


def _socket_path_log(caplog, limits) -> str:
    log = logging.getLogger("test-factory")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, caplog.at_level(logging.INFO):
        sock.bind(("127.0.0.1", 0))
        dataplane = open_dataplane("socket", sock, single_peer=True, replay_window=64,
                                   replay_time=15, log=log, control_limits=limits)
        dataplane.close()
    return caplog.text


def test_socket_path_says_xdp_control_limit_has_no_effect_there(caplog):
    assert "xdp-control-limit has no effect" in _socket_path_log(caplog, ControlLimits(1, 2, 3, 4))
    caplog.clear()
    assert "xdp-control-limit" not in _socket_path_log(caplog, DEFAULT_CONTROL_LIMITS)


@pytest.mark.parametrize(("kind", "engine", "workers", "error"), [
    ("xdp", "python", 2, "--workers 2 needs the native engine"),
    ("auto", "python", 3, "--workers 3 needs the native engine"),
    ("socket", "auto", 2, "--workers 2 needs XDP, not --data-path socket"),
])
def test_workers_the_data_path_cannot_run_are_refused_before_anything_starts(
        kind: str, engine: str, workers: int, error: str) -> None:
    if engine == "auto" and not native_available():
        pytest.skip("the native engine is not built")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        with pytest.raises(DataPlaneError, match=re.escape(error)):
            open_dataplane(kind, sock, single_peer=True, replay_window=64, replay_time=15,
                           log=logging.getLogger("test-factory"), engine=engine,
                           workers=workers)
