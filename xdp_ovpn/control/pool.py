"""The server's address pool: one IPv4 and/or one IPv6 tunnel address per client.

The ranges come from the config (`server` / `server-ipv6` expand to ifconfig-pool and
ifconfig-ipv6-pool there). Addresses go back to the pool when a client leaves; a
reconnecting common name gets its previous address again when it is free.
"""

from __future__ import annotations

import ipaddress


class PoolExhausted(Exception):
    """No free address left in a pool."""


class AddressPool:
    """A range of host addresses handed out lowest-first."""

    def __init__(self, first: str, last: str, prefixlen: int) -> None:
        self.first = ipaddress.ip_address(first)
        self.last = ipaddress.ip_address(last)
        if self.first.version != self.last.version or self.last < self.first:
            raise ValueError(f"bad pool range {first} - {last}")
        self.prefixlen = prefixlen
        self._used: set[int] = set()
        self._by_owner: dict[str, int] = {}
        self._next = int(self.first)

    @property
    def version(self) -> int:
        return self.first.version

    def allocate(self, owner: str | None = None) -> str:
        """A free address (the owner's previous one when possible), as text."""
        remembered = self._by_owner.get(owner) if owner else None
        if remembered is not None and remembered not in self._used:
            value = remembered
        else:
            value = self._scan()
        self._used.add(value)
        if owner:
            self._by_owner[owner] = value
        return str(ipaddress.ip_address(value))

    def contains(self, address: str) -> bool:
        value = ipaddress.ip_address(address)
        return value.version == self.version and self.first <= value <= self.last

    def reserve(self, address: str) -> None:
        """Mark a fixed address (ifconfig-push) used, so the pool never hands it out too."""
        if self.contains(address):
            self._used.add(int(ipaddress.ip_address(address)))

    def remember(self, owner: str, address: str) -> None:
        """Seed the owner's previous address (ifconfig-pool-persist) without taking it."""
        if self.contains(address):
            self._by_owner[owner] = int(ipaddress.ip_address(address))

    def leases(self) -> dict[str, str]:
        """Owner -> the address it had last (what ifconfig-pool-persist saves)."""
        return {owner: str(ipaddress.ip_address(v)) for owner, v in self._by_owner.items()}

    def release(self, address: str) -> None:
        self._used.discard(int(ipaddress.ip_address(address)))

    def _scan(self) -> int:
        lo, hi = int(self.first), int(self.last)
        size = hi - lo + 1
        if len(self._used) >= size:
            raise PoolExhausted(f"address pool {self.first} - {self.last} is exhausted")
        value = self._next
        for _ in range(size):
            if value > hi:
                value = lo
            if value not in self._used:
                self._next = value + 1
                return value
            value += 1
        raise PoolExhausted(f"address pool {self.first} - {self.last} is exhausted")
