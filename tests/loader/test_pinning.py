"""Maps pinned under bpffs: readable by another opener, removed on detach."""

from __future__ import annotations

import pytest

from tests.support.netns import inside
from xdp_ovpn.loader.classifier import Classifier, pin_dir
from xdp_ovpn.loader.maps import ClassifierMaps

pytestmark = [pytest.mark.root, pytest.mark.bpf]


def test_pinned_maps_are_shared_and_removed_on_detach(lab):
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b)
    with Classifier() as c, inside(a.name):
        c.attach("veth0", "generic")
        where = pin_dir("veth0")
        assert c.pinned == where and (where / "prog").exists()
        reader = ClassifierMaps.open_pinned(where)
        try:
            c.maps.set_peer(77, [1])
            assert reader.peers.lookup((77).to_bytes(4, "little")) == [b"\x02"]
        finally:
            reader.close()
        c.detach()
        assert not where.exists()
