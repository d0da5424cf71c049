"""Doctor probes: XDP attach in the caller's namespace, bpffs, BTF."""

from __future__ import annotations

import socket

import pytest

from tests.support.netns import inside
from xdp_ovpn.loader.attach import attached_prog_id
from xdp_ovpn.loader.probe import bpffs_mounted, btf_available, probe_xdp_attach

pytestmark = [pytest.mark.root, pytest.mark.bpf]


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_probe_attaches_and_detaches_inside_a_namespace(lab, mode):
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b)
    with inside(a.name):
        assert probe_xdp_attach("veth0", mode) == "BPF link"
        assert attached_prog_id(socket.if_nametoindex("veth0")) is None


def test_bpffs_and_btf_report_booleans(tmp_path):
    assert isinstance(btf_available(), bool)
    assert bpffs_mounted(tmp_path) is False
