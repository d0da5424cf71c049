"""Logging like openvpn's: a timestamp, then the message, one event a line, on stdout.

`verb` maps onto levels the way openvpn's does roughly: 0 errors only, 1-3 the usual
connection story, 4+ debug. Messages that tests and people grep for keep openvpn's
wording ("Initialization Sequence Completed", "Peer Connection Initiated with ...").
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOGGER_NAME = "xdp_ovpn"


def setup_logging(verb: int = 3, path: Path | None = None, append: bool = False) -> logging.Logger:
    """Configure and return the project logger for `xdp-ovpn run` (stdout, or `log FILE`)."""
    level = logging.ERROR if verb <= 0 else logging.INFO if verb <= 3 else logging.DEBUG
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler: logging.Handler
    if path is not None:
        handler = logging.FileHandler(path, mode="a" if append else "w")
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def peer_label(common_name: str | None, remote: tuple[str, int]) -> str:
    """openvpn's `cn/addr:port` peer prefix."""
    where = f"{display_host(remote[0])}:{remote[1]}"
    return f"{common_name}/{where}" if common_name else where


def display_host(host: str) -> str:
    """An IPv4-mapped IPv6 address as plain IPv4 (dual-stack sockets report them mapped)."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host
