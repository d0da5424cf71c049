"""A client's own options against a real openvpn 2.6 server: up/route-up/down scripts with
openvpn's environment (pushed dhcp-option as foreign_option_N), route-nopull with its own
routes, ping-exit, connect-retry-max, nice and writepid."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from tests.support.interop import IPV4_UNDERLAY, kill, ping, routes, underlay
from xdp_ovpn.lab.openvpn import (
    Endpoint,
    OpenVPNClient,
    OpenVPNPeer,
    OpenVPNServer,
    TunnelSpec,
    started,
)
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]

# Scripts get openvpn's environment only (no PATH): absolute paths throughout.
RECORDER = """#!/bin/sh
f="{out}/$script_type"
echo "$@" > "$f.args"
/usr/bin/env > "$f.partial" && /bin/mv "$f.partial" "$f.env"
"""


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A script that records each call (its environment and arguments) in a directory."""
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "record.sh"
    script.write_text(RECORDER.format(out=out))
    script.chmod(0o755)
    return script, out


def client_status_shows_traffic(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        fields = dict(line.split(",", 1) for line in lines if "," in line)
        if lines and int(fields.get("TUN/TAP read bytes", 0)) > 0:
            break
        assert time.monotonic() < deadline, f"no traffic in the status file: {lines}"
        time.sleep(0.2)
    assert lines[0] == "OpenVPN STATISTICS" and lines[-1] == "END"
    assert [line.split(",")[0] for line in lines[1:-1]] == [
        "Updated", "TUN/TAP read bytes", "TUN/TAP write bytes", "TCP/UDP read bytes",
        "TCP/UDP write bytes", "Auth read bytes"]
    assert int(fields["TCP/UDP read bytes"]) >= int(fields["TUN/TAP write bytes"]) > 0


def txqueuelen(ns, dev: str = "tun0") -> int:
    return json.loads(ns.run(["ip", "-j", "link", "show", dev]).stdout)[0]["txqlen"]


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _wait_for(path: Path, timeout: float = 10.0) -> Path:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path.name} was not written"
    return path


def test_up_route_up_down_scripts_get_foreign_options_and_routes(lab, tmp_path) -> None:
    net = underlay(lab, 4)
    script, out = recorder(tmp_path)
    pidfile = tmp_path / "client.pid"
    status = tmp_path / "status.log"
    spec = TunnelSpec(PKI(), proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, extra=[
        'push "dhcp-option DNS 10.8.0.53"', 'push "dhcp-option DOMAIN vpn.example"',
        'push "route 10.99.0.0 255.255.0.0"'])
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn",
                           extra=["script-security 2", f"up {script}", f"route-up {script}",
                                  f"down {script}", "nice 5", f"writepid {pidfile}",
                                  "setenv FORWARD_COMPATIBLE 1",
                                  "dhcp-option DOMAIN-SEARCH own.example", "txqueuelen 321",
                                  f"status {status} 1", "status-version 2"])
    with started(server), started(client):
        up = _env(out / "up.env")
        assert up["script_type"] == "up" and up["dev"] == "tun0"
        assert up["foreign_option_1"] == "dhcp-option DOMAIN-SEARCH own.example"
        assert up["foreign_option_2"] == "dhcp-option DNS 10.8.0.53"
        assert up["foreign_option_3"] == "dhcp-option DOMAIN vpn.example"
        assert up["FORWARD_COMPATIBLE"] == "1"
        local = str(client.tun_ipv4().ip)
        assert (out / "up.args").read_text().split() == [
            "tun0", "1500", "0", local, "255.255.255.0", "init"]
        route_up = _env(out / "route-up.env")
        assert route_up["script_type"] == "route-up"
        assert (route_up["route_network_1"], route_up["route_netmask_1"]) == (
            "10.99.0.0", "255.255.0.0")
        assert txqueuelen(net.client_ns) == 321
        pid = int(pidfile.read_text())
        assert int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) == 5
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        # openvpn's client status report, rewritten every second
        client_status_shows_traffic(status)
        assert not (out / "down.env").exists()
        assert client.stop() == 0
    assert _env(_wait_for(out / "down.env"))["script_type"] == "down"
    assert not pidfile.exists()


def test_route_nopull_leaves_pushed_routes_out_and_own_routes_in(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, extra=['push "route 10.99.0.0 255.255.0.0"',
                                                       'push "redirect-gateway def1"'])
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn",
                           extra=["route-nopull", "route 192.0.2.0 255.255.255.0",
                                  "pull-filter ignore ping", "mute-replay-warnings"])
    with started(server), started(client):
        table = routes(net.client_ns)
        assert "10.99.0.0" not in table and "0.0.0.0/1" not in table
        assert "192.0.2.0/24 via 10.8.0.1 dev tun0" in table
        ping(net.client_ns, server.tunnel_ipv4, count=1)  # the tunnel's own address stays
        assert "Pushed option removed by filter: 'route 10.99.0.0 255.255.0.0'" in client.log()
        assert re.search(r"NOTE: \S+:\d+: mute-replay-warnings: ignored \(log volume only\)",
                         client.log())
        mark = client.log_size()
        client.proc.send_signal(signal.SIGUSR2)  # the client's status report, to the log
        client.wait_for_log(r"OpenVPN STATISTICS(.|\n)*TCP/UDP read bytes,\d+(.|\n)*END",
                            since=mark)


def test_ping_exit_ends_the_client_when_the_server_goes_silent(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto, keepalive=(1, 30))  # pushes ping 1
    server = OpenVPNServer(net.server_ns, spec)
    # keepalive conflicts with ping-exit (in openvpn too): the client has ping-exit alone.
    text = spec.client_config(net.server_addr).replace("keepalive 1 30\n", "ping-exit 3\n")
    client = Endpoint(net.client_ns, text, program="xdp-ovpn")
    with started(server), started(client):
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        mark = client.log_size()
        kill(server)  # no EXIT: the client only sees silence
        client.wait_for_log(r"Inactivity timeout \(--ping-exit\), exiting", timeout=10,
                            since=mark)
        assert client.proc.wait(10) == 1
        assert "restarting" not in client.log()[mark:]


def test_connect_retry_max_gives_up_after_each_remote_was_tried(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto)
    # Nobody answers: each attempt ends at hand-window; two remotes, each tried twice.
    client = OpenVPNClient(net.client_ns, spec, remote=net.server_addr, program="xdp-ovpn",
                           extra=[f"remote {net.server_addr} 1195", "hand-window 1",
                                  "connect-retry 1 1", "connect-retry-max 2"])
    client.start(wait=False)
    try:
        client.wait_for_log("connect-retry-max \\(2\\) times unsuccessful, exiting", timeout=30)
        assert client.proc.wait(10) == 1
        assert client.log().count("UDP link remote:") == 4
    finally:
        client.stop()


def test_lport_and_rport_choose_the_ports_of_the_underlay(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto, port=1195)
    server = OpenVPNServer(net.server_ns, spec)
    text = spec.client_config(net.server_addr).replace(
        f"remote {net.server_addr} 1195", f"remote {net.server_addr}")
    client = Endpoint(net.client_ns, text + "rport 1195\nbind\nlport 1300\n", program="xdp-ovpn")
    with started(server), started(client):
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        assert f"{IPV4_UNDERLAY[1]}:1300" in server.log()  # the client's address


def test_persist_tun_keeps_the_tun_while_reconnecting(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto, keepalive=(1, 3))
    server = OpenVPNServer(net.server_ns, spec)
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn",
                           extra=["persist-tun"])
    with started(server), started(client):
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        mark = client.log_size()
        kill(server)
        client.wait_for_log(r"Inactivity timeout \(--ping-restart\)", timeout=15, since=mark)
        client.wait_for_log(r"UDP link remote:", timeout=15, since=client.log_size())
        assert "tun0" in net.client_ns.run(["ip", "-br", "link"]).stdout
        restarted = OpenVPNServer(net.server_ns, spec)
        with started(restarted):
            client.wait_for_log("Initialization Sequence Completed", timeout=30, since=mark)
            ping(net.client_ns, restarted.tunnel_ipv4, count=1)


def test_p2p_redirect_gateway_keeps_the_peer_outside_the_tunnel(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    server = OpenVPNPeer(net.server_ns, spec, tls_server=True)
    ours = OpenVPNPeer(net.client_ns, spec, tls_server=False, remote=net.server_addr,
                       program="xdp-ovpn",
                       extra=["redirect-gateway def1", "route 192.0.2.0 255.255.255.0"])
    with started(server, ours):
        table = routes(net.client_ns)
        assert "0.0.0.0/1 dev tun0" in table and "128.0.0.0/1 dev tun0" in table
        assert "192.0.2.0/24 dev tun0" in table
        ping(net.client_ns, server.tunnel_ipv4, count=1)  # the underlay still reaches it
    assert "0.0.0.0/1" not in routes(net.client_ns)
