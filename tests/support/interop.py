"""Shared pieces of the interop tests: a two-namespace underlay and endpoint helpers."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
from dataclasses import dataclass

from xdp_ovpn.dataplane.api import LINK_LOCAL_SOURCE
from xdp_ovpn.lab.netns import Namespace
from xdp_ovpn.lab.openvpn import Endpoint, OpenVPNPeer, TunnelSpec
from xdp_ovpn.lab.pki import PKI

IPV4_UNDERLAY = ("10.1.0.1", "10.1.0.2")
IPV6_UNDERLAY = ("fd00:1::1", "fd00:1::2")


@dataclass
class Underlay:
    server_ns: Namespace
    client_ns: Namespace
    server_addr: str
    proto: str


def underlay(lab, family: int = 4, rx_queues: int | None = None,
             in_use: int | None = None) -> Underlay:
    """Two namespaces on one veth pair, addressed in the given family; `rx_queues`
    allocated (default: the kernel's choice, as `ip link add` makes it), of which `in_use`
    are in use on both ends (`ethtool -L`)."""
    a, b = lab.add_namespace("s"), lab.add_namespace("c")
    pair = IPV6_UNDERLAY if family == 6 else IPV4_UNDERLAY
    prefix = 64 if family == 6 else 24
    lab.link(a, b, addrs=(f"{pair[0]}/{prefix}", f"{pair[1]}/{prefix}"), rx_queues=rx_queues)
    for ns in (a, b) if in_use else ():
        channels(ns, in_use)
    return Underlay(a, b, pair[0], "udp6" if family == 6 else "udp4")


def channels(ns: Namespace, count: int, ifname: str = "veth0") -> None:
    """`ethtool -L IF rx N tx N`: N queues in use, whatever is allocated."""
    ns.run(["ethtool", "-L", ifname, "rx", str(count), "tx", str(count)])


_SQUAT = """
import sys
from xdp_ovpn.dataplane.xsk import XskSocket
xsk = XskSocket(sys.argv[1], int(sys.argv[2]), tx_size=0)
print("bound", flush=True)
sys.stdin.read()
"""


def squat(ns: Namespace, queue: int, ifname: str = "veth0") -> subprocess.Popen:
    """Hold RX queue `queue` with an AF_XDP socket of our own (until the lab stops it), so
    no one else can bind it."""
    proc = ns.popen([sys.executable, "-c", _SQUAT, ifname, str(queue)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "bound"
    return proc


def p2p_with_openvpn(lab, xdp_is_tls_server: bool) -> tuple[Underlay, Endpoint, Endpoint]:
    """A TLS p2p pair over an IPv4 underlay: xdp-ovpn on one side, openvpn on the other."""
    net = underlay(lab, 4)
    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto=net.proto)
    server = OpenVPNPeer(net.server_ns, spec, tls_server=True,
                         program="xdp-ovpn" if xdp_is_tls_server else "openvpn")
    client = OpenVPNPeer(net.client_ns, spec, tls_server=False, remote=net.server_addr,
                         program="openvpn" if xdp_is_tls_server else "xdp-ovpn")
    return net, server, client


def use_prf(endpoint: Endpoint) -> Endpoint:
    """Make an xdp-ovpn endpoint refuse TLS-EKM, so both sides derive keys with the PRF."""
    base = endpoint.command()
    endpoint.command = lambda: [*base, "--key-derivation", "prf"]  # type: ignore[method-assign]
    return endpoint


def ping(ns: Namespace, address: str, count: int = 3) -> None:
    ns.run(["ping", "-c", str(count), "-i", "0.2", "-W", "3", address])


def iperf3(server_ns: Namespace, client_ns: Namespace, address: str, lab) -> str:
    """A short iperf3 TCP transfer through the tunnel; returns iperf3's summary text."""
    server = server_ns.popen(["iperf3", "-s", "-1", "-B", address],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab.wait_for(lambda: "5201" in server_ns.run(["ss", "-ltn"]).stdout, timeout=5)
    out = client_ns.run(["iperf3", "-c", address, "-n", "4M", "-f", "m"], timeout=60).stdout
    server.wait(timeout=10)
    assert re.search(r"receiver", out), out
    return out


def kill(endpoint: Endpoint) -> None:
    """SIGKILL, as a crash: no EXIT, nothing cleaned up by the process itself."""
    assert endpoint.proc is not None
    endpoint.proc.send_signal(signal.SIGKILL)
    endpoint.proc.wait(timeout=5)


def star(lab, clients: int) -> tuple[Namespace, list[tuple[Namespace, str]]]:
    """A server namespace with one veth link per client: [(client namespace, server addr)]."""
    hub = lab.add_namespace("s")
    spokes = []
    for i in range(clients):
        ns = lab.add_namespace(f"c{i}")
        lab.link(hub, ns, addrs=(f"10.1.{i}.1/24", f"10.1.{i}.2/24"), names=(f"veth{i}", "veth0"))
        spokes.append((ns, f"10.1.{i}.1"))
    return hub, spokes


def routes(ns: Namespace, family: int = 4) -> str:
    return ns.run(["ip", f"-{family}", "route", "show"]).stdout


def links(ns: Namespace) -> str:
    return ns.run(["ip", "-br", "link", "show"]).stdout


def pids(ns: Namespace) -> list[str]:
    """Processes still running inside the namespace."""
    out = subprocess.run(["ip", "netns", "pids", ns.name], capture_output=True, text=True)
    return out.stdout.split()


_VERDICTS = """
import sys
from xdp_ovpn.loader.classifier import open_attached
print({v.name: n for v, n in open_attached(sys.argv[1]).verdict_counts().items() if n})
"""


def verdicts(ns, ifname: str = "veth0") -> dict[str, int]:
    """The classifier's verdict counters on ifname, by name (the non-zero ones)."""
    return ast.literal_eval(ns.run([sys.executable, "-c", _VERDICTS, ifname]).stdout)


def redirected(ns, ifname: str = "veth0") -> int:
    """DATA_V2 packets the classifier on ifname sent to AF_XDP, read from its maps."""
    return verdicts(ns, ifname).get("REDIRECT", 0)


def fragments_passed(ns, ifname: str = "veth0") -> int:
    """IP fragments the classifier on ifname passed to the socket (mssfix too large)."""
    return verdicts(ns, ifname).get("PASS_FRAGMENT", 0)


def status(server) -> str:
    """The server's data-plane counters for its peers (SIGUSR2 STATUS line)."""
    mark = server.log_size()
    server.proc.send_signal(signal.SIGUSR2)
    return server.wait_for_log(r"STATUS (PeerStats\(.*\))", since=mark).group(1)


def drops(status: str) -> dict[str, int]:
    """The STATUS line's drops but those of the client kernel's own IPv6 link-local packets
    (router solicitations), which a server drops as openvpn does."""
    found = ast.literal_eval(re.search(r"drops=(\{.*?\})", status).group(1))
    found.pop(LINK_LOCAL_SOURCE, None)
    return found
