"""The peer table: lookups by id, remote address, VPN address and iroute prefix."""

from __future__ import annotations

import pytest

from xdp_ovpn.dataplane.api import DataPlaneError
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
