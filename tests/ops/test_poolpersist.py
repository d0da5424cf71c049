"""ifconfig-pool-persist files in openvpn's format, both ways."""

from __future__ import annotations

from xdp_ovpn.control.poolpersist import Lease, load, parse, render, save

# As openvpn 2.6 writes it (pool.c ifconfig_pool_list: "%s,%s,%s"), plus the forms it reads.
OPENVPN_FILE = """\
# comment
alice,10.8.0.2,fd00:8::1000
bob,10.8.0.3,
v6only,,fd00:8::1002
; another comment
legacy,10.8.0.9
broken
carol,10.8.0.300,fd00:8::zz
"""


def test_reads_openvpns_forms_and_notes_bad_lines():
    leases, notes = parse(OPENVPN_FILE)
    assert leases == {
        "alice": Lease("alice", "10.8.0.2", "fd00:8::1000"),
        "bob": Lease("bob", "10.8.0.3"),
        "v6only": Lease("v6only", None, "fd00:8::1002"),
        "legacy": Lease("legacy", "10.8.0.9"),
    }
    assert notes == ["pool: line 7: expected CN,IPv4[,IPv6]",
                     "pool: invalid IPv4 (10.8.0.300) for CN=carol",
                     "pool: invalid IPv6 (fd00:8::zz) for CN=carol"]


def test_writes_openvpns_format_atomically(tmp_path):
    path = tmp_path / "ipp.txt"
    assert load(path) == ({}, [])
    leases = {"alice": Lease("alice", "10.8.0.2", "fd00:8::1000"), "bob": Lease("bob", "10.8.0.3")}
    save(path, leases)
    assert path.read_text() == "alice,10.8.0.2,fd00:8::1000\nbob,10.8.0.3,\n"
    assert load(path) == (leases, [])
    assert render({}) == ""
    assert [p.name for p in tmp_path.iterdir()] == ["ipp.txt"]
