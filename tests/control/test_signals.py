"""Signals as openvpn takes them, against a real openvpn 2.6 client: SIGUSR2 writes the
status to the log; SIGHUP re-reads the config and restarts (the client reconnects and
gets what the new config pushes), a SIGHUP with a broken config changes nothing; SIGUSR1
restarts with the same config. The process survives all of them."""

from __future__ import annotations

import signal

import pytest
from test_client_options import txqueuelen

from tests.support.interop import ping, routes, underlay
from tests.support.mgmtclient import Client as MgmtClient
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]


def _pair(lab, extra=()):
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto, keepalive=(1, 10))
    server = OpenVPNServer(net.server_ns, spec, program="xdp-ovpn", extra=extra)
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr,
                           extra=["connect-retry 1 2"])
    return net, server, client


def test_sigusr2_writes_the_status_to_the_log(lab) -> None:
    net, server, client = _pair(lab, extra=["txqueuelen 321"])
    with started(server), started(client):
        assert txqueuelen(net.server_ns) == 321
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        mark = server.log_size()
        server.proc.send_signal(signal.SIGUSR2)
        server.wait_for_log("GLOBAL STATS", since=mark)
        status = server.log()[mark:]
        assert "OpenVPN CLIENT LIST" in status and "ROUTING TABLE" in status
        assert "client,10.1.0.2:" in status
        assert server.running


def test_sighup_rereads_the_config_and_the_client_reconnects(lab) -> None:
    net, server, client = _pair(lab)
    with started(server), started(client):
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        assert "10.98.0.0" not in routes(net.client_ns)
        pid = server.proc.pid

        # A broken config: logged, nothing else happens.
        good = server.config_path.read_text()
        server.config_path.write_text(good + "frobnicate\n")
        mark = server.log_size()
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log(r"SIGHUP: config not reloaded: .*frobnicate: unknown", since=mark)
        ping(net.client_ns, server.tunnel_ipv4, count=1)

        # A changed config: EXIT to the client, restart, the client comes back with it.
        server.config_path.write_text(good + 'push "route 10.98.0.0 255.255.0.0"\n')
        mark, client_mark = server.log_size(), client.log_size()
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_log("SIGHUP received: EXIT to the peers, then restart", since=mark)
        client.wait_for_log("Initialization Sequence Completed", timeout=60, since=client_mark)
        assert "10.98.0.0/16 via 10.8.0.1 dev tun0" in routes(net.client_ns)
        ping(net.client_ns, server.tunnel_ipv4, count=1)

        # SIGUSR1: the same again without re-reading.
        server.config_path.write_text(good)
        mark, client_mark = server.log_size(), client.log_size()
        server.proc.send_signal(signal.SIGUSR1)
        server.wait_for_log("SIGUSR1 received: EXIT to the peers, then restart", since=mark)
        client.wait_for_log("Initialization Sequence Completed", timeout=60, since=client_mark)
        assert "10.98.0.0/16 via 10.8.0.1 dev tun0" in routes(net.client_ns)
        assert server.running and server.proc.pid == pid
        assert server.stop() == 0


def test_management_signal_command_restarts_as_the_signal_does(lab, tmp_path) -> None:
    sock = tmp_path / "mgmt.sock"
    net, server, client = _pair(lab, extra=[f"management {sock} unix"])
    with started(server), started(client):
        mgmt = MgmtClient(str(sock))
        try:
            mgmt.greeting()
            mark, client_mark = server.log_size(), client.log_size()
            assert mgmt.ask("signal SIGHUP").strip() == "SUCCESS: signal SIGHUP thrown"
        finally:
            mgmt.close()
        server.wait_for_log("SIGHUP received: EXIT to the peers, then restart", since=mark)
        client.wait_for_log("Initialization Sequence Completed", timeout=60, since=client_mark)
        ping(net.client_ns, server.tunnel_ipv4, count=1)


def test_client_sighup_rereads_its_config_and_reconnects(lab) -> None:
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto, keepalive=(1, 10))
    server = OpenVPNServer(net.server_ns, spec)
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn")
    with started(server), started(client):
        pid = client.proc.pid
        client.config_path.write_text(client.config_path.read_text()
                                      + "route 192.0.2.0 255.255.255.0\n")
        mark = client.log_size()
        client.proc.send_signal(signal.SIGHUP)
        client.wait_for_log("Initialization Sequence Completed", timeout=60, since=mark)
        assert "192.0.2.0/24 via 10.8.0.1 dev tun0" in routes(net.client_ns)
        ping(net.client_ns, server.tunnel_ipv4, count=1)
        assert client.running and client.proc.pid == pid
