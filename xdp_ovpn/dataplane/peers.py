"""The peer table: lookups by peer-id, by remote address, and by VPN address (+ iroute LPM).

Like drivers/net/ovpn/peer.c: the receive path finds a peer by the peer-id in the DATA_V2
header, the transmit path by the packet's destination address (the peer's VPN address
first, then the longest iroute prefix). On a client or p2p endpoint there is one peer and
it takes everything (`single`).

On a server the receive path also checks that a decrypted packet's source address is the
sending peer's own by the transmit path's lookup (`owns_source`), as openvpn's multi.c and
ovpn's `ovpn_peer_check_by_src` do: a client cannot send as another client or as an
address it has no iroute for, and a changed address or iroute applies both ways at once.

Addresses are kept as packed bytes (4 or 16) so the hot path looks a TUN packet's
destination up with one dict access, without building address objects.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from xdp_ovpn.dataplane.api import (
    BAD_SOURCE,
    LINK_LOCAL_SOURCE,
    Address,
    DataPlaneError,
    PeerStats,
)

_IPV4_SOURCE = struct.Struct("!B11x4s").unpack_from  # version/IHL, source address
_IPV6_SOURCE = struct.Struct("!8x16s").unpack_from


def packed(address: str) -> bytes:
    """An IPv4/IPv6 address as 4/16 bytes; ValueError when it is not one."""
    return ipaddress.ip_address(address).packed


@dataclass(eq=False)
class Peer:
    """One peer's data-plane state; `keys` holds whatever the data path keeps per slot."""

    peer_id: int
    remote: Address
    vpn_ipv4: str | None = None
    vpn_ipv6: str | None = None
    iroutes: tuple[str, ...] = ()
    keepalive_interval: float | None = None
    keepalive_timeout: float | None = None
    keys: list[Any] = field(default_factory=lambda: [None, None])  # [primary, secondary]
    stats: PeerStats | None = None
    last_rx: float = 0.0
    last_tx: float = 0.0

    def __post_init__(self) -> None:
        if self.stats is None:
            self.stats = PeerStats(self.peer_id, self.remote, self.vpn_ipv4, self.vpn_ipv6)

    def drop(self, reason: str) -> None:
        drops = self.stats.drops
        drops[reason] = drops.get(reason, 0) + 1


class _Prefixes:
    """Longest-prefix match over IPv4 or IPv6 networks: one dict per prefix length."""

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self._by_len: dict[int, dict[int, Peer]] = {}
        self._lengths: list[int] = []  # descending

    def add(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, peer: Peer) -> None:
        table = self._by_len.setdefault(network.prefixlen, {})
        table[int(network.network_address)] = peer
        self._lengths = sorted(self._by_len, reverse=True)

    def remove_peer(self, peer: Peer) -> None:
        for length in list(self._by_len):
            table = self._by_len[length]
            for key in [k for k, v in table.items() if v is peer]:
                del table[key]
            if not table:
                del self._by_len[length]
        self._lengths = sorted(self._by_len, reverse=True)

    def lookup(self, address: bytes) -> Peer | None:
        if not self._lengths:
            return None
        value = int.from_bytes(address, "big")
        full = (1 << self.bits) - 1
        for length in self._lengths:
            mask = full ^ ((1 << (self.bits - length)) - 1)
            peer = self._by_len[length].get(value & mask)
            if peer is not None:
                return peer
        return None


class PeerTable:
    """All peers of one endpoint, indexed the three ways the data path needs."""

    def __init__(self, single: bool = False, check_source: bool | None = None) -> None:
        self.single = single
        # Whether owns_source checks at all: a server's rule (openvpn and the kernel drivers
        # let a client's or p2p peer's single peer send from anywhere).
        self.check_source = not single if check_source is None else check_source
        self._by_id: dict[int, Peer] = {}
        self._by_remote: dict[Address, Peer] = {}
        self._by_vpn: dict[bytes, Peer] = {}
        self._routes = {4: _Prefixes(32), 16: _Prefixes(128)}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._by_id.values()))

    def add(self, peer: Peer) -> None:
        if peer.peer_id in self._by_id:
            raise DataPlaneError(f"peer-id {peer.peer_id} already exists")
        if self.single and self._by_id:
            raise DataPlaneError("this endpoint has a single peer")
        self._by_id[peer.peer_id] = peer
        self._index(peer)

    def remove(self, peer_id: int) -> Peer:
        peer = self.get(peer_id)
        del self._by_id[peer_id]
        self._unindex(peer)
        return peer

    def get(self, peer_id: int) -> Peer:
        peer = self._by_id.get(peer_id)
        if peer is None:
            raise DataPlaneError(f"no peer with peer-id {peer_id}")
        return peer

    def by_id(self, peer_id: int) -> Peer | None:
        return self._by_id.get(peer_id)

    def by_remote(self, remote: Address) -> Peer | None:
        return self._by_remote.get(remote)

    def by_destination(self, address: bytes) -> Peer | None:
        """The peer a packet to `address` (4 or 16 packed bytes) goes to, or None."""
        if self.single:
            return next(iter(self._by_id.values()), None)
        peer = self._by_vpn.get(address)
        if peer is None:
            prefixes = self._routes.get(len(address))
            peer = prefixes.lookup(address) if prefixes else None
        return peer

    def owns_source(self, peer: Peer, buf: memoryview | bytearray, pos: int, n: int) -> bool:
        """Whether the decrypted packet buf[pos:pos+n] from `peer` may go to the TUN: its
        IPv4/IPv6 source is one `by_destination` gives to `peer`. When not (also for a
        payload that is not IP or is shorter than its IP header) it is counted on the peer
        as BAD_SOURCE and its source kept in the peer's stats (an IPv6 link-local source:
        LINK_LOCAL_SOURCE). Without `check_source` (a single peer) anything goes.
        """
        if not self.check_source:
            return True
        source = b""
        if n >= 20:  # one unpack for the usual IPv4 packet, a second one for IPv6
            first, source = _IPV4_SOURCE(buf, pos)
            if first >> 4 != 4:
                source = _IPV6_SOURCE(buf, pos)[0] if first >> 4 == 6 and n >= 40 else b""
        # The length of the key, not the address, says the family: an IPv6 packet from
        # ::ffff:a.b.c.d is looked up among IPv6 addresses and never matches an IPv4 one.
        owner = self._by_vpn.get(source)
        if owner is None and source:
            owner = self._routes[len(source)].lookup(source)
        if owner is peer:
            return True
        if len(source) == 16 and source[0] == 0xFE and source[1] & 0xC0 == 0x80:
            peer.drop(LINK_LOCAL_SOURCE)
            return False
        peer.drop(BAD_SOURCE)
        peer.stats.last_bad_source = source
        return False

    def update(
        self,
        peer_id: int,
        *,
        remote: Address | None = None,
        vpn_ipv4: str | None = None,
        vpn_ipv6: str | None = None,
        iroutes: Iterable[str] | None = None,
    ) -> Peer:
        """Change a peer's addresses and re-index it."""
        peer = self.get(peer_id)
        self._unindex(peer)
        if remote is not None:
            peer.remote = peer.stats.remote = remote
        if vpn_ipv4 is not None:
            peer.vpn_ipv4 = peer.stats.vpn_ipv4 = vpn_ipv4
        if vpn_ipv6 is not None:
            peer.vpn_ipv6 = peer.stats.vpn_ipv6 = vpn_ipv6
        if iroutes is not None:
            peer.iroutes = tuple(iroutes)
        self._index(peer)
        return peer

    def _index(self, peer: Peer) -> None:
        try:
            vpn = [packed(a) for a in (peer.vpn_ipv4, peer.vpn_ipv6) if a]
            networks = [ipaddress.ip_network(r, strict=False) for r in peer.iroutes]
        except ValueError as exc:
            self._by_id.pop(peer.peer_id, None)
            raise DataPlaneError(f"peer {peer.peer_id}: {exc}") from None
        self._by_remote[peer.remote] = peer
        for address in vpn:
            self._by_vpn[address] = peer
        for network in networks:
            self._routes[4 if network.version == 4 else 16].add(network, peer)

    def _unindex(self, peer: Peer) -> None:
        if self._by_remote.get(peer.remote) is peer:
            del self._by_remote[peer.remote]
        for key in [k for k, v in self._by_vpn.items() if v is peer]:
            del self._by_vpn[key]
        for prefixes in self._routes.values():
            prefixes.remove_peer(peer)
