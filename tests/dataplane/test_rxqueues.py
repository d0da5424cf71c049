"""RX queue discovery: the count in use, which AF_XDP can bind, not the count allocated."""

from __future__ import annotations

import pytest

from tests.support.nsfork import in_netns
from xdp_ovpn.dataplane.rxqueues import RxQueues, rx_queues
from xdp_ovpn.dataplane.xsk import XskError, probe_afxdp

pytestmark = [pytest.mark.root]


def _found_and_bindable(ifname: str, allocated: int) -> tuple[RxQueues, list[bool]]:
    """What discovery says inside the namespace, and which allocated queues really bind."""
    found = rx_queues(ifname, allocated)
    bindable = []
    for queue in range(allocated):
        try:
            probe_afxdp(ifname, queue)
            bindable.append(True)
        except XskError:
            bindable.append(False)
    return found, bindable


def _allocated(ns, ifname: str) -> int:
    return ns.ipr.get_links(ifname=ifname)[0].get_attr("IFLA_NUM_RX_QUEUES")


@pytest.mark.parametrize("shape", ["plain", "2 in use", "4 allocated, 1 in use"])
def test_the_queues_found_are_exactly_the_queues_that_bind(lab, shape: str) -> None:
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, rx_queues={"plain": None, "2 in use": 2}.get(shape, 4))
    if shape.startswith("4"):
        a.run(["ethtool", "-L", "veth0", "rx", "1", "tx", "1"])
    allocated = _allocated(a, "veth0")
    found, bindable = in_netns(a.name, _found_and_bindable, "veth0", allocated)
    assert bindable == [q < found.in_use for q in range(allocated)], (found, bindable)
    assert found.in_use == (2 if shape == "2 in use" else 1)
    assert found.source == "ethtool"


def _bridge_queues() -> RxQueues:
    import subprocess

    subprocess.run(["ip", "link", "add", "xobr0", "type", "bridge"], check=True)
    return rx_queues("xobr0", 1)


def test_an_interface_without_channels_falls_back_without_error(lab) -> None:
    # A bridge has no ethtool channels; the forked child sees the host's sysfs, not the
    # namespace's, so sysfs must not be trusted either: the allocated count remains.
    a = lab.add_namespace("a")
    found = in_netns(a.name, _bridge_queues)
    assert found == RxQueues(1, 1, "allocated")
    assert rx_queues("xo-no-such-if", 3) == RxQueues(3, 3, "allocated")
