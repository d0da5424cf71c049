"""A client's or p2p endpoint's status: openvpn's "OpenVPN STATISTICS" report (sig.c
print_status), written to `status FILE [N]` and to the log on SIGUSR2."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from xdp_ovpn.control.status import StatusFile, time_string


class Counters(NamedTuple):
    """What print_status reports, for the current connection (auth_read: the link bytes
    that passed authentication)."""

    tun_read: int
    tun_write: int
    link_read: int
    link_write: int
    auth_read: int


def statistics(counters: Counters, now: float | None = None) -> list[str]:
    return [
        "OpenVPN STATISTICS",
        f"Updated,{time_string(time.time() if now is None else now)}",
        f"TUN/TAP read bytes,{counters.tun_read}",
        f"TUN/TAP write bytes,{counters.tun_write}",
        f"TCP/UDP read bytes,{counters.link_read}",
        f"TCP/UDP write bytes,{counters.link_write}",
        f"Auth read bytes,{counters.auth_read}",
        "END",
    ]


class ClientStatusFile(StatusFile):
    """`status FILE [N]` of a client or p2p endpoint (status-version is a server's)."""

    def __init__(self, path: Path, interval: float, counters: Callable[[], Counters]) -> None:
        super().__init__(path, 1, interval, snapshot=lambda: None)  # type: ignore[arg-type,return-value]
        self.counters = counters

    def report(self) -> bytes:
        return "".join(line + "\n" for line in statistics(self.counters())).encode()
