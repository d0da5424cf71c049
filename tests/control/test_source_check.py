"""A client may send only from its own tunnel addresses: a real openvpn 2.6 client against
`xdp-ovpn run` on each data path.

The client holds, besides the addresses the server gave it, one inside its client-config-dir
`iroute`/`iroute-ipv6` networks (which pass, and are answered through the iroute) and one
nobody gave it (which reach nothing on the server: tcpdump on its TUN sees none of them).
The drops are counted per peer (`get_peer`, through SIGUSR2's STATUS line), shown in the
management interface's status and in /metrics, and logged at most once every
BAD_SOURCE_LOG_SECONDS per client.
"""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.interop import ping, redirected, underlay
from tests.support.mgmtclient import CRLF, Client
from xdp_ovpn.control.badsource import BAD_SOURCE_LOG_SECONDS
from xdp_ovpn.control.status import BAD_SOURCE_STAT
from xdp_ovpn.dataplane.api import BAD_SOURCE
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]

METRICS = "127.0.0.1:9176"  # in the server's own namespace
LAN4, LAN6 = "192.168.77.1", "fd77::1"  # behind the client, inside its iroutes
SPOOF4, SPOOF6 = "10.8.0.77", "fd00:8::77"  # in the tunnel subnets, given to nobody
SPOOFED = 3  # echo requests a family


def _server(net, base: Path, data_path: str) -> OpenVPNServer:
    ccd = base / "ccd"
    ccd.mkdir()
    (ccd / "client").write_text("iroute 192.168.77.0 255.255.255.0\niroute-ipv6 fd77::/64\n")
    extra = [f"client-config-dir {ccd}", "route 192.168.77.0 255.255.255.0",
             "route-ipv6 fd77::/64", f"management {base / 'mgmt.sock'} unix"]
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn", extra=extra,
                           workdir=base / "server")
    command = server.command
    server.command = lambda: [*command(), "--data-path", data_path,  # type: ignore[method-assign]
                              "--metrics", METRICS]
    return server


def _peer_stats(server) -> str:
    """The server's get_peer counters for its one client (SIGUSR2 STATUS line)."""
    mark = server.log_size()
    server.proc.send_signal(signal.SIGUSR2)
    return server.wait_for_log(r"STATUS (PeerStats\(.*\))", since=mark).group(1)


def _bad_sources(stats: str) -> int:
    return ast.literal_eval(re.search(r"drops=(\{.*?\})", stats).group(1)).get(BAD_SOURCE, 0)


def _spoofed_pings(ns, source: str, target: str) -> None:
    out = ns.run(["ping", "-c", str(SPOOFED), "-i", "0.2", "-W", "1", "-I", source, target],
                 check=False)
    assert out.returncode != 0 and f"{SPOOFED} packets transmitted, 0 received" in out.stdout


def _metrics(ns) -> str:
    fetch = ("import urllib.request,sys;"
             f"sys.stdout.write(urllib.request.urlopen('http://{METRICS}/metrics').read().decode())")
    return ns.run([sys.executable, "-c", fetch]).stdout


@pytest.mark.parametrize("data_path", ["socket", pytest.param("xdp", marks=pytest.mark.bpf)])
def test_a_client_sends_only_from_its_addresses_and_iroutes(lab, tmp_path, data_path) -> None:
    net = underlay(lab, 4)
    server = _server(net, tmp_path, data_path)
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr)
    c, s = net.client_ns, net.server_ns
    with started(server), started(client):
        server.wait_for_log(f"Data path: {data_path}")
        own4, own6 = str(client.tun_ipv4().ip), str(client.tun_ipv6().ip)
        c.add_address("lo", f"{LAN4}/32")
        c.add_address("lo", f"{LAN6}/128")
        c.add_address("tun0", f"{SPOOF4}/32")
        c.add_address("tun0", f"{SPOOF6}/128")
        # Its own addresses and those behind it pass, and the answers come back.
        for source, target in ((own4, server.tunnel_ipv4), (own6, server.tunnel_ipv6),
                               (LAN4, server.tunnel_ipv4), (LAN6, server.tunnel_ipv6)):
            c.run(["ping", "-c", "2", "-i", "0.2", "-W", "3", "-I", source, target])
        assert _bad_sources(_peer_stats(server)) == 0
        # Anything else reaches nothing on the server.
        capture = s.popen(["tcpdump", "-i", "tun0", "-nn", "-l", "-c", "100",
                           f"host {SPOOF4} or host {SPOOF6}"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "listening on tun0" in capture.stderr.readline() + capture.stderr.readline()
        steered = redirected(s) if data_path == "xdp" else 0
        _spoofed_pings(c, SPOOF4, server.tunnel_ipv4)
        if data_path == "xdp":  # they took the AF_XDP path, and were dropped there
            assert redirected(s) >= steered + SPOOFED
        stats = _peer_stats(server)
        assert _bad_sources(stats) == SPOOFED
        assert f"last_bad_source={bytes(map(int, SPOOF4.split('.')))!r}" in stats, stats
        # Read by the management interface: logged at once, the first time.
        mgmt = Client(str(tmp_path / "mgmt.sock"))
        mgmt.greeting()
        status = mgmt.ask("status 2", "END" + CRLF)
        assert f"GLOBAL_STATS,{BAD_SOURCE_STAT},{SPOOFED}\r\n" in status, status
        first = server.wait_for_log(r"client/[\d.:]+ MULTI: bad source address from client "
                                    rf"\[{SPOOF4}\], {SPOOFED} packets dropped", timeout=5)
        _spoofed_pings(c, SPOOF6, server.tunnel_ipv6)
        status = mgmt.ask("status 3", "END" + CRLF)
        mgmt.close()
        assert f"GLOBAL_STATS\t{BAD_SOURCE_STAT}\t{2 * SPOOFED}\r\n" in status, status
        metrics = _metrics(s)
        # Rate-limited: the second burst is reported by the periodic read, not on demand.
        mark = server.log_size()
        server.wait_for_log(rf"bad source address from client \[{SPOOF6}\], {SPOOFED} packets",
                            timeout=2 * BAD_SOURCE_LOG_SECONDS + 5, since=mark)
        log = server.log()
        capture.terminate()
        seen, summary = capture.communicate(timeout=5)
        ping(c, server.tunnel_ipv4, count=1)  # the client itself is still served
    assert seen.strip() == "" and "0 packets captured" in summary, seen + summary
    assert log.count("bad source address from client") == 2, log
    assert first.start() < log.index(f"[{SPOOF6}]")
    assert re.search(r'xdp_ovpn_peer_dropped_packets_total\{common_name="client",.*'
                     rf'reason="{BAD_SOURCE}"\}} {2 * SPOOFED}\n', metrics), metrics
