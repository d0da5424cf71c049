"""xdp-ovpn on the XDP path against openvpn 2.7.8 (Debian sid, chrooted from the lab's
cached root): server, client and TLS p2p, both ways.

The default cases keep both ends' default data-ciphers, so they also show what 2.7
picks; the full product of roles x wrappings x ciphers is marked slow. We do not offer
IV_PROTO_DATA_EPOCH, so 2.7 must use the 2.6 data format: its log has no "Epoch Data
key" and no aead-epoch protocol flag.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
from test_interop import CIPHERS, WRAPPINGS
from test_interop_xdp import use_xdp

from tests.support.interop import iperf3, ping, redirected, underlay
from xdp_ovpn.lab.openvpn import (
    Endpoint,
    OpenVPNClient,
    OpenVPNPeer,
    OpenVPNServer,
    TunnelSpec,
    started,
)
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn27, pytest.mark.bpf]

DEFAULT_CIPHER = "AES-256-GCM"  # the head of both sides' default data-ciphers
# verb 4 (openvpn takes the last one) logs each data key: "Outgoing Data Channel: Cipher"
# for the 2.6 format, "Outgoing Epoch Data key N" for the epoch format.
OURS = {"program": "xdp-ovpn"}
THEIRS = {"openvpn": "2.7", "extra": ("verb 4",)}
# Which end xdp-ovpn plays; openvpn 2.7 is the other one.
ROLES = ("server", "client", "p2p-server", "p2p-client")

# (role, wrapping, cipher or None for the defaults, underlay family)
REPRESENTATIVE = [
    ("server", "tls-crypt", None, 4),
    ("client", "tls-crypt", None, 6),
    ("p2p-server", "tls-crypt", None, 4),
]
FULL = [(role, wrapping, cipher, 4)
        for role, wrapping, cipher in itertools.product(ROLES, WRAPPINGS, CIPHERS)]
MATRIX = [pytest.param(*case, id="-".join(map(str, case))) for case in REPRESENTATIVE] + [
    pytest.param(*case, id="-".join(map(str, case)), marks=pytest.mark.slow) for case in FULL
]


def _tunnel(lab, role: str, wrapping: str, cipher: str | None, family: int) -> tuple:
    """(underlay, server, client, ours, theirs), ours on the XDP path."""
    net = underlay(lab, family)
    spec = TunnelSpec(PKI(), wrapping=wrapping, cipher=cipher, proto=net.proto)
    ours_serves = role.endswith("server")
    server_side, client_side = (OURS, THEIRS) if ours_serves else (THEIRS, OURS)
    if role.startswith("p2p"):
        server = OpenVPNPeer(net.server_ns, spec, tls_server=True, **server_side)
        client = OpenVPNPeer(net.client_ns, spec, tls_server=False, remote=net.server_addr,
                             **client_side)
    else:
        server = OpenVPNServer(net.server_ns, spec, **server_side)
        client = OpenVPNClient(net.client_ns, server, remote=net.server_addr, **client_side)
    ours, theirs = (server, client) if ours_serves else (client, server)
    use_xdp(ours)
    return net, server, client, ours, theirs


def _check_openvpn27_log(theirs: Endpoint, cipher: str) -> None:
    """2.7 says it is 2.7 and took `cipher` with the 2.6 data format."""
    log = theirs.log()
    assert "OpenVPN 2.7." in log
    # Client and server print "Data Channel: cipher 'X'"; p2p NCP "... epoch=0, cipher=X".
    assert f"Data Channel: cipher '{cipher}'" in log or f"epoch=0, cipher={cipher}" in log, log
    assert f"Outgoing Data Channel: Cipher '{cipher}'" in log, log
    assert "Epoch Data key" not in log
    assert "aead-epoch" not in log


@pytest.mark.parametrize(("role", "wrapping", "cipher", "family"), MATRIX)
def test_with_openvpn27(lab, role, wrapping, cipher, family) -> None:
    net, server, client, ours, theirs = _tunnel(lab, role, wrapping, cipher, family)
    with contextlib.ExitStack() as stack:
        if role.startswith("p2p"):
            stack.enter_context(started(server, client))  # p2p peers wait for each other
        else:
            stack.enter_context(started(server))  # server first: no refused first try
            stack.enter_context(started(client))
        ours.wait_for_log(r"Data path: xdp")
        ours.wait_for_log(f"Data Channel: cipher '{cipher or DEFAULT_CIPHER}'")
        ping(net.client_ns, server.tunnel_ipv4)
        ping(net.server_ns, str(client.tun_ipv4().ip))
        ping(net.client_ns, server.tunnel_ipv6)
        iperf3(net.server_ns, net.client_ns, server.tunnel_ipv4, lab)
        assert redirected(ours.ns) > 200  # DATA_V2 took the XDP path
        _check_openvpn27_log(theirs, cipher or DEFAULT_CIPHER)
