"""`sndbuf` / `rcvbuf` reach the UDP socket as openvpn sets them; 0 keeps the default."""

from __future__ import annotations

import socket

import pytest

from tests.support.interop import ping, underlay
from xdp_ovpn.config import parse_text
from xdp_ovpn.control.app import _open_socket
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.lab.pki import PKI


def _client_config(extra: str):
    pki = PKI()
    cred = pki.client("c")
    return parse_text(
        f"client\nremote 127.0.0.1\nlocal 127.0.0.1\nnobind\n{extra}"
        f"<ca>\n{pki.ca_pem.decode()}</ca>\n<cert>\n{cred.cert_pem.decode()}</cert>\n"
        f"<key>\n{cred.key_pem.decode()}</key>\n", "b.conf")


def _default(option: int) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
        return fresh.getsockopt(socket.SOL_SOCKET, option)


def test_sndbuf_sets_the_socket_buffer_and_rcvbuf_zero_keeps_the_default() -> None:
    cfg = _client_config("sndbuf 50000\nrcvbuf 0\n")
    assert (cfg.sndbuf, cfg.rcvbuf) == (50000, 0)
    with _open_socket(cfg) as sock:
        # Linux doubles the size asked for (its bookkeeping overhead)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 100000
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == _default(socket.SO_RCVBUF)


def test_rcvbuf_sets_the_socket_buffer() -> None:
    with _open_socket(_client_config("rcvbuf 40000\n")) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 80000
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == _default(socket.SO_SNDBUF)


@pytest.mark.root
@pytest.mark.openvpn
def test_own_and_pushed_buffers_reach_a_clients_socket(lab) -> None:
    """An xdp-ovpn client sets its own sndbuf at start, then what an openvpn 2.6 server
    pushes, and the tunnel works over the socket data path that uses them."""
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), proto=net.proto)
    server = OpenVPNServer(net.server_ns, spec, extra=['push "sndbuf 100000"',
                                                       'push "rcvbuf 90000"'])
    client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, program="xdp-ovpn",
                           extra=["sndbuf 60000"])
    base = client.command
    client.command = lambda: [*base(), "--data-path", "socket"]  # type: ignore[method-assign]
    with started(server), started(client):
        client.wait_for_log(r"Socket Buffers: R=\[(\d+)->\1\] S=\[\d+->120000\]")
        client.wait_for_log(r"Socket Buffers: R=\[\d+->180000\] S=\[120000->200000\]")
        ping(net.client_ns, server.tunnel_ipv4)
