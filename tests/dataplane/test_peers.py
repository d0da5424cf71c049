"""The peer table: lookups by id, remote address, VPN address and iroute prefix."""

from __future__ import annotations

import pytest

from xdp_ovpn.dataplane.api import BAD_SOURCE, LINK_LOCAL_SOURCE, DataPlaneError
from xdp_ovpn.dataplane.peers import Peer, PeerTable, packed


def _table() -> PeerTable:
    table = PeerTable()
    table.add(Peer(0, ("192.0.2.1", 1194), "10.8.0.2", "fd00::1000"))
    table.add(Peer(1, ("192.0.2.2", 1194), "10.8.0.3", iroutes=("172.16.0.0/16",)))
    table.add(Peer(2, ("192.0.2.3", 1194), "10.8.0.4", iroutes=("172.16.5.0/24", "fd01::/48")))
    return table


def test_lookup_by_id_and_remote() -> None:
    table = _table()
    assert table.by_id(1).remote == ("192.0.2.2", 1194)
    assert table.by_remote(("192.0.2.3", 1194)).peer_id == 2
    assert table.by_id(7) is None
    assert table.by_remote(("192.0.2.9", 1194)) is None


def test_vpn_address_wins_then_longest_iroute_prefix() -> None:
    table = _table()
    assert table.by_destination(packed("10.8.0.2")).peer_id == 0
    assert table.by_destination(packed("fd00::1000")).peer_id == 0
    assert table.by_destination(packed("172.16.9.9")).peer_id == 1
    assert table.by_destination(packed("172.16.5.9")).peer_id == 2  # /24 beats /16
    assert table.by_destination(packed("fd01::7")).peer_id == 2
    assert table.by_destination(packed("10.9.9.9")) is None


def test_remove_and_update_reindex() -> None:
    table = _table()
    table.remove(2)
    assert table.by_destination(packed("172.16.5.9")).peer_id == 1
    table.update(1, remote=("198.51.100.7", 5000), iroutes=())
    assert table.by_remote(("192.0.2.2", 1194)) is None
    assert table.by_remote(("198.51.100.7", 5000)).peer_id == 1
    assert table.by_destination(packed("172.16.9.9")) is None
    assert table.get(1).stats.remote == ("198.51.100.7", 5000)


def test_single_peer_table_takes_everything() -> None:
    table = PeerTable(single=True)
    table.add(Peer(0x76706E, ("192.0.2.1", 1194)))
    assert table.by_destination(packed("203.0.113.5")).peer_id == 0x76706E
    with pytest.raises(DataPlaneError):
        table.add(Peer(1, ("192.0.2.2", 1194)))


def test_bad_input_is_a_typed_error() -> None:
    table = PeerTable()
    with pytest.raises(DataPlaneError, match="already exists"):
        table.add(Peer(0, ("192.0.2.1", 1)))
        table.add(Peer(0, ("192.0.2.1", 1)))
    with pytest.raises(DataPlaneError):
        table.add(Peer(5, ("192.0.2.1", 2), "not-an-address"))
    assert table.by_id(5) is None
    with pytest.raises(DataPlaneError, match="no peer"):
        table.remove(42)


def _ip4(source: str, length: int = 28) -> bytearray:
    """An IPv4 packet (header fields that matter here only) from `source`."""
    packet = bytearray(max(length, 20))
    packet[0] = 0x45
    packet[12:16] = packed(source)
    return packet[:length]


def _ip6(source: str, length: int = 48) -> bytearray:
    packet = bytearray(max(length, 40))
    packet[0] = 0x60
    packet[8:24] = packed(source)
    return packet[:length]


def _owns(table: PeerTable, peer_id: int, packet: bytearray, offset: int = 0) -> bool:
    buf = bytearray(offset) + packet + bytearray(64)  # something after the packet, as a frame
    return table.owns_source(table.get(peer_id), memoryview(buf), offset, len(packet))


def test_source_is_the_peers_vpn_address_or_in_its_iroutes() -> None:
    table = _table()
    assert _owns(table, 0, _ip4("10.8.0.2"))
    assert _owns(table, 0, _ip6("fd00::1000"))
    assert _owns(table, 1, _ip4("172.16.9.9"), offset=24)  # at the DATA_V2 plaintext offset
    assert _owns(table, 2, _ip4("172.16.5.9"))
    assert _owns(table, 2, _ip6("fd01::7"))
    assert table.get(0).stats.drops == {} and table.get(2).stats.drops == {}


def test_another_peers_address_or_an_unrouted_one_is_a_counted_drop() -> None:
    table = _table()
    assert not _owns(table, 0, _ip4("10.8.0.3"))  # peer 1's VPN address
    assert not _owns(table, 1, _ip4("172.16.5.9"))  # peer 2's longer iroute wins
    assert not _owns(table, 0, _ip4("10.8.0.77"))  # nobody's
    assert not _owns(table, 1, _ip6("fd00::1000"))
    assert not _owns(table, 1, _ip6("fd01::7"))  # peer 1 has no IPv6 at all
    assert table.get(0).stats.drops == {BAD_SOURCE: 2}
    assert table.get(1).stats.drops == {BAD_SOURCE: 3}
    assert table.get(0).stats.last_bad_source == packed("10.8.0.77")
    assert table.get(1).stats.last_bad_source == packed("fd01::7")


def test_ipv4_mapped_ipv6_source_never_matches_an_ipv4_address_or_iroute() -> None:
    table = _table()
    assert not _owns(table, 0, _ip6("::ffff:10.8.0.2"))
    assert not _owns(table, 1, _ip6("::ffff:172.16.9.9"))
    assert table.get(1).stats.last_bad_source == packed("::ffff:172.16.9.9")
    # Nor an IPv4 packet whose 4 bytes happen to end an IPv6 address of the peer.
    table.add(Peer(3, ("192.0.2.4", 1194), "10.8.0.9", "::ffff:10.8.0.9",
                   iroutes=("::ffff:172.17.0.0/112",)))
    assert _owns(table, 3, _ip6("::ffff:10.8.0.9"))  # its own IPv6 address, mapped form
    assert _owns(table, 3, _ip6("::ffff:172.17.0.1"))  # inside its IPv6 iroute
    assert not _owns(table, 3, _ip4("172.17.0.1"))  # ... which says nothing about IPv4


def test_truncated_and_non_ip_payloads_are_bad_sources() -> None:
    table = _table()
    cases = [
        _ip4("10.8.0.2", 19),  # one byte short of an IPv4 header
        _ip6("fd00::1000", 39),  # one byte short of an IPv6 header
        _ip4("10.8.0.2", 0),  # nothing at all
        bytearray(b"\x55" * 40),  # version 5
        bytearray(b"\x00" * 60),  # version 0 (not IP)
        _ip6("fd00::1000", 28),  # IPv6 version but only an IPv4 header's worth
    ]
    for packet in cases:
        assert not _owns(table, 0, packet), packet
    assert table.get(0).stats.drops == {BAD_SOURCE: len(cases)}
    assert table.get(0).stats.last_bad_source == b""
    assert _owns(table, 0, _ip4("10.8.0.2", 20)) and _owns(table, 0, _ip6("fd00::1000", 40))


def test_address_and_iroute_changes_apply_to_the_source_check_at_once() -> None:
    table = _table()
    table.update(1, vpn_ipv4="10.8.0.30", iroutes=("192.168.1.0/24",))
    assert not _owns(table, 1, _ip4("10.8.0.3")) and not _owns(table, 1, _ip4("172.16.9.9"))
    assert _owns(table, 1, _ip4("10.8.0.30")) and _owns(table, 1, _ip4("192.168.1.7"))
    table.remove(2)
    table.update(1, iroutes=("172.16.0.0/16",))
    assert _owns(table, 1, _ip4("172.16.5.9"))  # peer 2's /24 is gone: peer 1's /16 now


def test_single_peer_table_takes_any_source() -> None:
    table = PeerTable(single=True)
    table.add(Peer(0, ("192.0.2.1", 1194), "10.8.0.2"))
    for packet in (_ip4("203.0.113.5"), _ip6("2001:db8::5"), bytearray(b"\x00" * 8)):
        assert _owns(table, 0, packet)
    assert table.get(0).stats.drops == {}


def test_ipv6_link_local_source_is_dropped_under_its_own_reason() -> None:
    table = _table()
    assert not _owns(table, 0, _ip6("fe80::c49c:983:3845:cfd2"))
    assert not _owns(table, 0, _ip6("febf::1"))  # the top of fe80::/10
    assert not _owns(table, 0, _ip6("fec0::1"))  # site-local, outside it: a bad source
    assert table.get(0).stats.drops == {LINK_LOCAL_SOURCE: 2, BAD_SOURCE: 1}
    assert table.get(0).stats.last_bad_source == packed("fec0::1")
