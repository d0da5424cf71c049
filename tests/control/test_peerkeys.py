"""KeysReady / KeyRetired become the DCO verbs in the order ovpn-dco expects."""

from __future__ import annotations

from xdp_ovpn.control.peerkeys import PeerKeys
from xdp_ovpn.dataplane.api import KeySlot, PeerStats
from xdp_ovpn.proto.events import KeyRetired, KeysReady


class RecordingDataPlane:
    """Records verbs; enough of the DataPlane API for PeerKeys."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.link = (0, 0, 0, 0)  # rx packets, rx bytes, tx packets, tx bytes

    def __getattr__(self, verb: str):
        return lambda *args, **kw: self.calls.append((verb, *args[:3], *sorted(kw.items())))

    def get_peer(self, peer_id: int) -> PeerStats:
        rx_packets, rx_bytes, tx_packets, tx_bytes = self.link
        return PeerStats(peer_id, ("192.0.2.1", 1194), link_rx_packets=rx_packets,
                         link_rx_bytes=rx_bytes, link_tx_packets=tx_packets,
                         link_tx_bytes=tx_bytes)


def _keys(key_id: int, epoch: bool = False) -> KeysReady:
    return KeysReady(key_id, "AES-256-GCM", 5, b"e" * 32, b"n" * 8, b"d" * 32, b"m" * 8,
                     epoch=epoch)


def test_first_key_makes_the_peer_then_renegotiated_keys_swap_in() -> None:
    dp = RecordingDataPlane()
    peer = PeerKeys(dp, ("192.0.2.1", 1194))
    peer.vpn_ipv4 = "10.8.0.2"
    peer.keepalive = (10.0, 60.0)
    peer.keys_ready(_keys(0))
    peer.keys_ready(_keys(1, epoch=True))  # the key's data format travels with it
    peer.key_retired(KeyRetired(0))
    peer.keys_ready(_keys(2))
    peer.remove()
    assert dp.calls == [
        ("new_peer", 5, ("192.0.2.1", 1194), "10.8.0.2"),
        ("set_peer", 5, ("keepalive_interval", 10.0), ("keepalive_timeout", 60.0)),
        ("new_key", 5, KeySlot.PRIMARY, 0, ("epoch", False)),
        ("new_key", 5, KeySlot.SECONDARY, 1, ("epoch", True)),
        ("swap_keys", 5),
        ("del_key", 5, KeySlot.SECONDARY),
        ("new_key", 5, KeySlot.SECONDARY, 2, ("epoch", False)),
        ("swap_keys", 5),
        ("del_peer", 5),
    ]


def test_expired_peer_is_not_deleted_twice() -> None:
    dp = RecordingDataPlane()
    peer = PeerKeys(dp, ("192.0.2.1", 1194))
    peer.keys_ready(_keys(0))
    peer.gone = True  # the data plane said PeerExpired
    peer.remove()
    assert [c[0] for c in dp.calls] == ["new_peer", "new_key"]


def test_traffic_is_handed_out_once_and_a_key_swap_starts_from_its_moment() -> None:
    dp = RecordingDataPlane()
    peer = PeerKeys(dp, ("192.0.2.1", 1194))
    assert peer.take_traffic() == (0, 0)  # no peer yet
    peer.keys_ready(_keys(0))
    dp.link = (10, 1000, 5, 600)
    assert peer.take_traffic() == (1600, 15)  # both directions, as openvpn counts a key
    dp.link = (12, 1200, 6, 700)
    assert peer.take_traffic() == (300, 3)
    dp.link = (20, 2000, 10, 1100)  # carried by key 0 after the last read
    peer.keys_ready(_keys(1))
    dp.link = (21, 2100, 10, 1100)
    assert peer.take_traffic() == (100, 1)  # key 1's own traffic only
