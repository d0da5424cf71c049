"""`management` and `--metrics` on xdp-ovpn as a client of a real openvpn 2.6 server, and as
a p2p peer of a real openvpn: openvpn's client states and STATISTICS over management,
`signal SIGUSR1` reconnecting in place, a Prometheus scrape of the one peer."""

from __future__ import annotations

import re
import sys

import pytest

from tests.support.interop import ping, underlay
from tests.support.mgmtclient import CRLF
from tests.support.mgmtclient import Client as MgmtClient
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNPeer, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]

METRICS = "127.0.0.1:9177"
END = "END" + CRLF


def _tunnel_ipv4(ns, dev: str = "tun0") -> str:
    out = ns.run(["ip", "-4", "-o", "addr", "show", "dev", dev]).stdout
    return re.search(r"inet (\S+)/", out).group(1)


def _statistics(mgmt: MgmtClient) -> dict[str, int]:
    lines = mgmt.ask("status", END).split(CRLF)
    assert lines[0] == "OpenVPN STATISTICS" and lines[1].startswith("Updated,")
    return {k: int(v) for k, v in (line.rsplit(",", 1) for line in lines[2:-2])}


def _state_lines(text: str) -> list[list[str]]:
    return [line.split(",") for line in text.split(CRLF) if line and line != "END"]


def _with_metrics(endpoint):
    base = endpoint.command()
    endpoint.command = lambda: [*base, "--metrics", METRICS]  # type: ignore[method-assign]
    return endpoint


def _scrape(ns) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    fetch = ("import urllib.request,sys;"
             f"sys.stdout.write(urllib.request.urlopen('http://{METRICS}/metrics').read()"
             ".decode())")
    text = ns.run([sys.executable, "-c", fetch]).stdout
    return {f.name: f for f in text_string_to_metric_families(text)}


def _client_pair(lab, tmp_path):
    net = underlay(lab, 4)
    net.client_ns.run(["ip", "link", "set", "lo", "up"])
    spec = TunnelSpec(PKI(), proto=net.proto, keepalive=(1, 10))
    server = OpenVPNServer(net.server_ns, spec)
    sock = tmp_path / "mgmt.sock"
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn",
                           extra=[f"management {sock} unix", "connect-retry 1"])
    return net, server, _with_metrics(client), str(sock)


def test_client_management_reports_state_statistics_and_reconnects_on_sigusr1(
        lab, tmp_path) -> None:
    net, server, client, sock = _client_pair(lab, tmp_path)
    with started(server), started(client):
        mgmt = MgmtClient(sock)
        try:
            assert mgmt.greeting().startswith(">INFO:OpenVPN Management Interface")
            tunnel_ip = _tunnel_ipv4(net.client_ns)
            states = _state_lines(mgmt.ask("state all", END))
            assert [s[1] for s in states][:2] == ["CONNECTING", "WAIT"]
            assert "GET_CONFIG" in [s[1] for s in states]
            # openvpn's columns: time, state, description, tunnel IP, remote IP, port, ...
            last = states[-1]
            assert last[1:6] == ["CONNECTED", "SUCCESS", tunnel_ip, net.server_addr, "1194"]

            before = _statistics(mgmt)
            ping(net.client_ns, server.tunnel_ipv4, count=3)
            after = _statistics(mgmt)
            for key in ("TUN/TAP read bytes", "TUN/TAP write bytes", "TCP/UDP read bytes",
                        "TCP/UDP write bytes"):
                assert after[key] > before[key], key
            load = mgmt.ask("load-stats")
            assert re.fullmatch(r"SUCCESS: nclients=0,bytesin=\d+,bytesout=\d+\r\n", load)
            assert mgmt.ask("kill alice") == (
                "ERROR: The 'kill' command is not supported by the current daemon mode" + CRLF)
            assert mgmt.ask("bytecount 1") == "SUCCESS: bytecount interval changed" + CRLF
            assert re.fullmatch(r">BYTECOUNT:\d+,\d+\r\n", mgmt.read_until(CRLF))
            mgmt.ask("bytecount 0", "SUCCESS: bytecount interval changed" + CRLF)

            # SIGUSR1: the client reconnects in place; this session sees it happen.
            assert mgmt.ask("state on").endswith(
                "SUCCESS: real-time state notification set to ON" + CRLF)
            assert mgmt.ask("signal SIGUSR1") == "SUCCESS: signal SIGUSR1 thrown" + CRLF
            mgmt.sock.settimeout(30)
            seen = ""
            while ",CONNECTED,SUCCESS," not in seen:
                seen += mgmt.read_until(CRLF)
            assert ">STATE:" in seen and ",RECONNECTING,SIGUSR1," in seen
            ping(net.client_ns, server.tunnel_ipv4, count=1)
            assert client.proc.poll() is None
        finally:
            mgmt.close()
        families = _scrape(net.client_ns)
        assert families["xdp_ovpn_up"].samples[0].value == 1
        first = families["xdp_ovpn_peer_received_bytes"].samples[0].value
        sent = families["xdp_ovpn_peer_sent_bytes"].samples[0].value
        ping(net.client_ns, server.tunnel_ipv4, count=3)
        families = _scrape(net.client_ns)
        assert families["xdp_ovpn_peer_received_bytes"].samples[0].value > first
        assert families["xdp_ovpn_peer_sent_bytes"].samples[0].value > sent
        assert families["xdp_ovpn_handshakes"].samples[0].value >= 2  # before and after USR1
        assert "xdp_ovpn_dco_enabled" in families and "xdp_ovpn_worker_up" in families


def test_p2p_management_and_metrics(lab, tmp_path) -> None:
    net = underlay(lab, 4)
    net.client_ns.run(["ip", "link", "set", "lo", "up"])
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    sock = str(tmp_path / "mgmt.sock")
    server = OpenVPNPeer(net.server_ns, spec, tls_server=True)
    peer = _with_metrics(OpenVPNPeer(net.client_ns, spec, tls_server=False,
                                     remote=net.server_addr, program="xdp-ovpn",
                                     extra=[f"management {sock} unix"]))
    with started(server, peer):
        ping(net.client_ns, server.tunnel_ipv4, count=2)
        mgmt = MgmtClient(sock)
        try:
            mgmt.greeting()
            last = _state_lines(mgmt.ask("state", END))[-1]
            assert last[1:5] == ["CONNECTED", "SUCCESS", peer.tunnel_ipv4, net.server_addr]
            assert _statistics(mgmt)["TUN/TAP write bytes"] > 0
            families = _scrape(net.client_ns)
            assert families["xdp_ovpn_up"].samples[0].value == 1
            assert families["xdp_ovpn_peer_received_bytes"].samples[0].value > 0
            # Stopping: the session hears EXITING with the signal, then the close.
            mgmt.ask("state on", "SUCCESS: real-time state notification set to ON" + CRLF)
            assert peer.stop() == 0
            assert ",EXITING,SIGTERM," in mgmt.read_until(CRLF)
        finally:
            mgmt.close()
