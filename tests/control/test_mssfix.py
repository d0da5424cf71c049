"""mssfix on both data paths, against a real openvpn 2.6 client that leaves SYNs alone
(`mssfix 0`): the SYN it sends arrives on the xdp-ovpn server's TUN with the MSS that
openvpn 2.6 would clamp it to, or untouched with `mssfix 0`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support.interop import underlay
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn, pytest.mark.bpf]

_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=3).close()
except OSError:
    pass  # refused: the SYN went through, which is all we want
"""

# (data path, the server's mssfix line, the MSS its TUN sees, the underlay's IP version);
# the client's SYN says 1460.
CASES = {
    "xdp-default": ("xdp", None, 1492 - 28 - 24 - 40, 4),
    "xdp-default-udp6": ("xdp", None, 1492 - 48 - 24 - 40, 6),  # IPv6 + UDP headers: 48
    "xdp-payload": ("xdp", "mssfix 1300", 1300 - 24 - 40, 4),
    "socket-fixed": ("socket", "mssfix 1400 fixed", 1400 - 40, 4),
    "socket-default-udp6": ("socket", None, 1492 - 48 - 24 - 40, 6),
    "socket-off": ("socket", "mssfix 0", 1460, 4),
}


def _syn_mss(server_ns, client_ns, address: str) -> int:
    """The MSS option of a SYN from the client, as seen on the server's TUN."""
    dump = server_ns.popen(["tcpdump", "-i", "tun0", "-nn", "-l", "-c", "1", "-v",
                            "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "listening on" in dump.stderr.readline()
    client_ns.run([sys.executable, "-c", _CONNECT, address])
    out, _ = dump.communicate(timeout=10)
    match = re.search(r"mss (\d+)", out)
    assert match, out
    return int(match.group(1))


@pytest.mark.parametrize("case", CASES)
def test_server_clamps_syns_as_openvpn_mssfix_says(lab, case: str) -> None:
    path, line, expected, family = CASES[case]
    net = underlay(lab, family)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn",
                           extra=[line] if line else [])
    base = server.command
    server.command = lambda: [*base(), "--data-path", path]  # type: ignore[method-assign]
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, extra=["mssfix 0"])
    with started(server), started(client):
        server.wait_for_log(rf"Data path: {path}")
        assert _syn_mss(net.server_ns, net.client_ns, server.tunnel_ipv4) == expected
