"""A two-namespace tunnel for the guest scripts: server in one namespace, client in the other,
either end `openvpn` or `xdp-ovpn`, both stopped on exit."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from xdp_ovpn.lab import Lab
from xdp_ovpn.lab.netns import Namespace
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec
from xdp_ovpn.lab.pki import PKI

UNDERLAY = ("10.77.0.1/24", "10.77.0.2/24")
SERVER_IP = UNDERLAY[0].split("/")[0]
# xdp-ovpn compiles its XDP program with clang at start; the lab scales this wait with the
# emulated CPU (vm.pace): a few minutes under TCG.
START_TIMEOUT = 30.0


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[Lab, Namespace, Namespace]]:
    """Server and client namespaces joined by a veth pair on UNDERLAY."""
    with Lab() as lab:
        a, b = lab.add_namespace("srv"), lab.add_namespace("cli")
        lab.link(a, b, addrs=UNDERLAY)
        # A wire carries single datagrams: segment UDP GSO before the veth, as a NIC would.
        # veth otherwise hands the peer whole GSO datagrams, and the 6.1 guest's ovpn-dco
        # then crashes the kernel (nested frag_list skbs: slab double free, stack overflow).
        for ns in (a, b):
            ns.run(["ethtool", "-K", "veth0", "tx-udp-segmentation", "off"])
        yield lab, a, b


@contextlib.contextmanager
def tunnel(a: Namespace, b: Namespace, server_prog: str, client_prog: str,
           extra: Sequence[str] = ()) -> Iterator[tuple[OpenVPNServer, OpenVPNClient]]:
    """A started server in `a` and a connected client in `b`."""
    spec = TunnelSpec(PKI(), network6=None)
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(
            OpenVPNServer(a, spec, program=server_prog, extra=extra).start(START_TIMEOUT))
        client = stack.enter_context(
            OpenVPNClient(b, server, remote=SERVER_IP, program=client_prog, extra=extra)
            .start(START_TIMEOUT))
        yield server, client
