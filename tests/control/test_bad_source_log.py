"""The rate-limited "bad source address" log line of a server's client (no root)."""

from __future__ import annotations

from xdp_ovpn.control.badsource import BAD_SOURCE_LOG_SECONDS, BadSourceLog
from xdp_ovpn.dataplane.api import BAD_SOURCE, PeerStats
from xdp_ovpn.dataplane.peers import packed


def _stats(count: int, source: str | None = "10.8.0.77") -> PeerStats:
    stats = PeerStats(0, ("192.0.2.1", 1194), drops={BAD_SOURCE: count, "ReplayError": 9})
    stats.last_bad_source = packed(source) if source else b""
    return stats


def test_first_drops_are_logged_at_once_then_at_most_once_a_period_with_the_count() -> None:
    log = BadSourceLog()
    assert log.due(_stats(0), 100.0) is None  # other drops are not its business
    assert log.due(_stats(1), 100.0) == (
        "MULTI: bad source address from client [10.8.0.77], 1 packet dropped")
    assert log.due(_stats(5000), 101.0) is None  # a flood: one line a period
    assert log.due(_stats(9000, "fd00:8::77"), 100.0 + BAD_SOURCE_LOG_SECONDS) == (
        "MULTI: bad source address from client [fd00:8::77], 8999 packets dropped")
    assert log.due(_stats(9000), 200.0) is None  # nothing new


def test_leaving_client_gets_its_last_line_at_once_and_a_restarted_count_is_new() -> None:
    log = BadSourceLog()
    assert log.due(_stats(3), 100.0) is not None
    assert log.due(_stats(4, None), 101.0, final=True) == (
        "MULTI: bad source address from client [no IP header], 1 packet dropped")
    assert log.due(_stats(2), 200.0) == (  # a replacement worker's counters start at 0
        "MULTI: bad source address from client [10.8.0.77], 2 packets dropped")


def test_ipv4_mapped_source_is_shown_as_the_ipv6_address_it_is() -> None:
    line = BadSourceLog().due(_stats(1, "::ffff:10.8.0.2"), 0.0)
    assert line is not None and "[::ffff:10.8.0.2]" in line
