"""The server's "bad source address" log line for one client: openvpn's MULTI line, rate
limited, with the count of packets the data plane dropped since the last one."""

from __future__ import annotations

import dataclasses
import socket

from xdp_ovpn.dataplane.api import BAD_SOURCE, PeerStats

# A client's packets from a source that is not its own are logged at most this often, with
# how many there were since (the data plane only counts them: a flood costs no log lines).
BAD_SOURCE_LOG_SECONDS = 10.0


@dataclasses.dataclass
class BadSourceLog:
    """One client's rate-limited "bad source address" log line (openvpn's, with a count)."""

    reported: int = 0  # the BAD_SOURCE count the log has told of
    at: float = -BAD_SOURCE_LOG_SECONDS  # monotonic time of the last line

    def due(self, stats: PeerStats, now: float, final: bool = False) -> str | None:
        """The line to log for these counters now, if one is due (`final`: the client is
        leaving, so no waiting); None otherwise."""
        count = stats.drops.get(BAD_SOURCE, 0)
        if count < self.reported:  # a replacement worker counts from 0 again
            self.reported = 0
        new = count - self.reported
        if new <= 0 or (not final and now - self.at < BAD_SOURCE_LOG_SECONDS):
            return None
        self.reported, self.at = count, now
        source = stats.last_bad_source
        shown = _address_text(source) if source else "no IP header"
        return (f"MULTI: bad source address from client [{shown}], {new} packet"
                f"{'' if new == 1 else 's'} dropped")


def _address_text(packed: bytes) -> str:
    """4 or 16 packed bytes as text; IPv4-mapped IPv6 in its dotted form (::ffff:a.b.c.d)."""
    return socket.inet_ntop(socket.AF_INET6 if len(packed) == 16 else socket.AF_INET, packed)
