"""`xdp-ovpn attach --observe` on a real openvpn 2.6 server's underlay: counts, never steers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.netns import inside
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec
from xdp_ovpn.lab.pki import PKI
from xdp_ovpn.loader.classifier import open_attached
from xdp_ovpn.loader.maps import Verdict
from xdp_ovpn.proto.constants import Opcode

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.openvpn]

CLI = [sys.executable, "-m", "xdp_ovpn.cli"]
PINGS = 20


def test_observe_counts_real_openvpn_traffic_while_the_tunnel_works(lab):
    srv, cli = lab.add_namespace("srv"), lab.add_namespace("cli")
    lab.link(srv, cli, addrs=("10.1.0.1/24", "10.1.0.2/24"))
    owner = srv.popen([*CLI, "attach", "-i", "veth0", "-l", ":1194", "--observe"],
                      stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert "observe only" in owner.stdout.readline()
    spec = TunnelSpec(PKI(), wrapping="tls-crypt")
    with OpenVPNServer(srv, spec) as server, OpenVPNClient(cli, server, remote="10.1.0.1"):
        cli.run(["ping", "-c", str(PINGS), "-i", "0.05", "-W", "2", server.tunnel_ipv4])
        with inside(srv.name):
            maps = open_attached("veth0")
        try:
            ops, verdicts = maps.opcode_counts(), maps.verdict_counts()
            assert ops[Opcode.HARD_RESET_CLIENT_V2] >= 1
            assert ops[Opcode.CONTROL_V1] >= 1 and ops[Opcode.ACK_V1] >= 1
            assert ops[Opcode.DATA_V2] >= PINGS
            assert verdicts[Verdict.PASS_UNKNOWN_PEER] == ops[Opcode.DATA_V2]
            assert not any(verdicts[v] for v in Verdict if v.name.startswith("DROP"))
            # Even a peer the classifier would steer is only counted in observe mode.
            maps.set_peer(0, range(8))  # openvpn gives its first client peer-id 0
            cli.run(["ping", "-c", str(PINGS), "-i", "0.05", "-W", "2", server.tunnel_ipv4])
            assert maps.verdict_counts()[Verdict.PASS_OBSERVE] >= PINGS
            assert maps.peer_counts()[0].packets >= PINGS
        finally:
            maps.close()
        stats = srv.run([*CLI, "stats", "-i", "veth0"]).stdout
        assert "DATA_V2" in stats and "pass_observe" in stats
    owner.terminate()
    assert owner.wait(timeout=10) == 0
