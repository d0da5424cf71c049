"""Under a hostile flood from spoofed sources, an xdp-ovpn server on the XDP path sheds at
XDP what its control plane would only throw away, while a real openvpn 2.6 client keeps
its tunnel and a second one connects.

    late (10.2.0.2) ── c (10.1.0.2, routes; openvpn client; the flood) ── s (10.1.0.1, xdp-ovpn)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from test_interop_xdp import use_xdp

from tests.support.netns import inside
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn, pytest.mark.bpf]

SERVER, CLIENT, LATE = "10.1.0.1", "10.1.0.2", "10.2.0.2"
FLOOD_PPS, FLOOD_SECONDS = 2000, 60  # a bound: the test stops it once its checks are done
# Small enough that this flood (about 1100 control packets/s) is over the global rate.
LIMITS = "xdp-control-limit 16 64 100 200"


def _topology(lab):
    s, c, late = lab.add_namespace("s"), lab.add_namespace("c"), lab.add_namespace("l")
    lab.link(s, c, addrs=(f"{SERVER}/24", f"{CLIENT}/24"))
    lab.link(c, late, addrs=("10.2.0.1/24", f"{LATE}/24"), names=("veth1", "veth0"))
    c.run(["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    s.add_route("0.0.0.0/0", via=CLIENT)  # also where replies to spoofed sources die
    late.add_route("0.0.0.0/0", via="10.2.0.1")
    return s, c, late


def _ping_loss(ns, address: str, count: int) -> int:
    out = ns.run(["ping", "-c", str(count), "-i", "0.2", "-W", "2", address], check=False).stdout
    return int(re.search(r"(\d+)% packet loss", out).group(1))


def _verdicts(maps) -> dict[str, int]:
    return {v.name.lower(): n for v, n in maps.verdict_counts().items()}


def test_flood_is_shed_at_xdp_while_the_tunnel_keeps_going_and_a_new_client_connects(lab):
    from xdp_ovpn.loader.classifier import open_attached

    s, c, late_ns = _topology(lab)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto="udp4")
    server = use_xdp(OpenVPNServer(s, spec, program="xdp-ovpn", extra=[LIMITS]))
    client = OpenVPNClient(c, server, remote=SERVER)
    late = OpenVPNClient(late_ns, server, remote=SERVER, cn="late")
    with started(server), started(client):
        server.wait_for_log(r"Data path: xdp")
        # The server mirrors a client's key before it pushes the peer-id: the very first
        # data packets are not dropped as an unknown peer's.
        assert _ping_loss(c, server.tunnel_ipv4, 1) == 0
        with inside(s.name):
            maps = open_attached("veth0")
        mac = s.ipr.get_links(ifname="veth0")[0].get_attr("IFLA_ADDRESS")
        before = _verdicts(maps)
        flood = c.popen([sys.executable, "-m", "xdp_ovpn.lab.flood", "--interface", "veth0",
                         "--mac", mac, "--to", f"{SERVER}:1194", "--pps", str(FLOOD_PPS),
                         "--seconds", str(FLOOD_SECONDS)], stdout=subprocess.PIPE, text=True)
        try:
            assert lab.wait_for(lambda: _verdicts(maps)["drop_unknown_peer"]
                                > before["drop_unknown_peer"], timeout=10)
            began = time.monotonic()
            with started(late, timeout=30):
                print(f"second client up {time.monotonic() - began:.1f} s into the flood")
                assert _ping_loss(c, server.tunnel_ipv4, 20) == 0
                assert _ping_loss(late_ns, server.tunnel_ipv4, 5) == 0
                assert flood.poll() is None, "the flood ended before the checks did"
            flood.terminate()
            sent = json.loads(flood.communicate(timeout=10)[0])
        finally:
            if flood.poll() is None:
                flood.kill()
        after = _verdicts(maps)
    moved = {k: after[k] - before[k] for k in after}
    print("flood sent", sent, "verdicts moved", {k: n for k, n in moved.items() if n})
    # Nothing the data plane cannot use went up; (nearly) all of it was dropped at XDP.
    assert moved["pass_unknown_peer"] == 0 and moved["pass_data_v1"] == 0
    assert moved["drop_unknown_peer"] >= 0.9 * sent["data_v2"]
    assert moved["drop_data_v1"] >= 0.9 * sent["data_v1"]
    # Control packets from strangers beyond the global bucket were shed too.
    assert moved["drop_control_global"] > 0
    assert moved["redirect"] > 0  # the tunnels' DATA_V2 still took AF_XDP
    maps.close()
