"""Address pools: what openvpn's server / server-ipv6 helpers hand out."""

from __future__ import annotations

import pytest

from xdp_ovpn.control.pool import AddressPool, PoolExhausted


def test_pool_hands_out_lowest_first() -> None:
    pool = AddressPool("10.8.0.2", "10.8.0.253", 24)
    assert [pool.allocate() for _ in range(3)] == ["10.8.0.2", "10.8.0.3", "10.8.0.4"]
    v6 = AddressPool("fd00::1000", "fd00::ffff", 64)
    assert v6.allocate() == "fd00::1000"


def test_released_address_is_reused_and_owner_gets_its_address_back() -> None:
    pool = AddressPool("10.0.0.2", "10.0.0.4", 24)
    a = pool.allocate("alice")
    b = pool.allocate("bob")
    pool.release(a)
    pool.release(b)
    assert pool.allocate("bob") == b
    assert pool.allocate("alice") == a


def test_exhausted_pool_raises() -> None:
    pool = AddressPool("10.0.0.2", "10.0.0.3", 24)
    pool.allocate()
    pool.allocate()
    with pytest.raises(PoolExhausted):
        pool.allocate()
