"""`--data-path`: which data plane opens, and what it says about options it cannot honour."""

from __future__ import annotations

import logging
import socket

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
