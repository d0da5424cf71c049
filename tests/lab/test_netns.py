import subprocess

import pytest

from xdp_ovpn.lab import Lab, LabError
from xdp_ovpn.lab.netns import NETNS_DIR

pytestmark = pytest.mark.root


def _exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def test_two_namespaces_linked_can_ping(lab):
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, addrs=("10.9.0.1/24", "10.9.0.2/24"), extra_addrs=[("fd09::1/64", "fd09::2/64")])
    a.run(["ping", "-c1", "-W2", "10.9.0.2"])
    a.run(["ping", "-c1", "-W2", "fd09::2"])


def test_teardown_removes_namespaces_and_processes():
    with Lab() as lab:
        a = lab.add_namespace("a")
        proc = a.popen(["sleep", "600"])
        name = a.name
        assert _exists(name)
    assert not _exists(name)
    assert proc.poll() is not None


def test_exception_midway_leaves_nothing_behind():
    names = []
    with pytest.raises(RuntimeError), Lab() as lab:
        a, b = lab.add_namespace("a"), lab.add_namespace("b")
        names = [a.name, b.name]
        lab.link(a, b)
        raise RuntimeError("test failure midway")
    assert names and not any(_exists(n) for n in names)


def test_failed_command_raises_lab_error_with_reason(lab):
    a = lab.add_namespace("a")
    with pytest.raises(LabError, match="exited"):
        a.run(["false"])


def test_parallel_labs_use_distinct_names():
    with Lab() as one, Lab() as two:
        x, y = one.add_namespace("n"), two.add_namespace("n")
        assert x.name != y.name


def test_multiqueue_veth(lab):
    a, b = lab.add_namespace("a"), lab.add_namespace("b")
    lab.link(a, b, rx_queues=2)
    out = a.run(["ls", "/sys/class/net/veth0/queues"]).stdout.split()
    assert "rx-1" in out


def test_stale_namespaces_of_dead_owners_are_removed():
    from xdp_ovpn.lab import cleanup_stale

    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    name = f"xo{child.pid}-stale"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert name in cleanup_stale()
        assert not _exists(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
