"""What the benchmark compares: one small declarative entry per scenario.

Every scenario runs on the same topology: two namespaces joined by one veth pair,
the server side at 10.1.0.1 and the client side at 10.1.0.2. A tunnel scenario
starts a server and a client from one `TunnelSpec` and aims the traffic at the
server's tunnel address; the bare scenario aims it at the underlay address.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from xdp_ovpn.lab.netns import Lab, Namespace
from xdp_ovpn.lab.openvpn import Endpoint, OpenVPNClient, OpenVPNServer, TunnelSpec, started

UNDERLAY = ("10.1.0.1", "10.1.0.2")
UNDERLAY_PREFIX = 24
UNDERLAY_IF = "veth0"


@dataclass(frozen=True)
class Scenario:
    """A pair of endpoints: `None` programs mean the bare link."""

    name: str
    label: str
    server: str | None = None  # "openvpn" or "xdp-ovpn"
    client: str | None = None
    data_path: str | None = None  # for the xdp-ovpn ends: "xdp" or "socket"
    workers: int | None = None  # the xdp-ovpn ends' data-plane workers; None: the run's

    @property
    def tunnel(self) -> bool:
        return self.server is not None

    def unavailable(self) -> str | None:
        """Why this scenario cannot run on this machine and build, or None."""
        for tool in ("iperf3", "ping", "ss"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed"
        if "openvpn" in (self.server, self.client) and shutil.which("openvpn") is None:
            return "the openvpn binary is not installed"
        if self.data_path == "xdp":
            from xdp_ovpn.dataplane.factory import xdp_unavailable

            return xdp_unavailable()
        return None


BARE = "bare"
USERSPACE = "openvpn"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(BARE, "bare veth"),
    Scenario(USERSPACE, "openvpn ↔ openvpn (userspace)", "openvpn", "openvpn"),
    Scenario("ovpn-xdp", "openvpn client ↔ xdp-ovpn server (XDP)", "xdp-ovpn", "openvpn", "xdp"),
    Scenario("xdp-xdp", "xdp-ovpn ↔ xdp-ovpn (XDP)", "xdp-ovpn", "xdp-ovpn", "xdp"),
    # The same two with two data-plane workers each (native engine): beside the two above,
    # one and two workers are compared in one run, on one topology (run_queues).
    Scenario("ovpn-xdp-2w", "openvpn client ↔ xdp-ovpn server (XDP, 2 workers)",
             "xdp-ovpn", "openvpn", "xdp", workers=2),
    Scenario("xdp-xdp-2w", "xdp-ovpn ↔ xdp-ovpn (XDP, 2 workers each)", "xdp-ovpn",
             "xdp-ovpn", "xdp", workers=2),
    Scenario(
        "ovpn-socket", "openvpn client ↔ xdp-ovpn server (socket path)",
        "xdp-ovpn", "openvpn", "socket",
    ),
    Scenario("socket-socket", "xdp-ovpn ↔ xdp-ovpn (socket path)", "xdp-ovpn", "xdp-ovpn",
             "socket"),
)
BY_NAME = {s.name: s for s in SCENARIOS}


def select(names: str | None) -> list[Scenario]:
    """Scenarios by comma-separated names (all when None); the baselines always come along."""
    if not names:
        return list(SCENARIOS)
    wanted = {n.strip() for n in names.split(",") if n.strip()}
    unknown = wanted - BY_NAME.keys()
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(BY_NAME)}")
    wanted |= {BARE, USERSPACE}
    return [s for s in SCENARIOS if s.name in wanted]


@dataclass
class Topology:
    """A running scenario: where to aim traffic and which processes to account."""

    scenario: Scenario
    server_ns: Namespace
    client_ns: Namespace
    target: str
    processes: dict[str, int] = field(default_factory=dict)  # role -> root pid
    setup_seconds: float = 0.0
    endpoints: tuple[Endpoint, ...] = ()


def two_hosts(lab: Lab, mtu: int | None = None,
              rx_queues: int | None = None) -> tuple[Namespace, Namespace]:
    """The benchmark's topology: server and client namespaces on one veth pair (with
    `rx_queues` RX and TX queues in use on both ends; default: the kernel's choice)."""
    server, client = lab.add_namespace("bs"), lab.add_namespace("bc")
    addrs = tuple(f"{a}/{UNDERLAY_PREFIX}" for a in UNDERLAY)
    lab.link(server, client, addrs=addrs, names=(UNDERLAY_IF, UNDERLAY_IF), mtu=mtu,  # type: ignore[arg-type]
             rx_queues=rx_queues)
    return server, client


def workers_queues(workers: int | None) -> int | None:
    """The veth's queues for a run with `--workers`: at least two, so that one and two
    workers are measured on the same topology; None: the kernel's choice."""
    return max(workers, 2) if workers else None


def run_queues(scenarios: list[Scenario], workers: int | None) -> int | None:
    """The veth's queues for every scenario of a run: enough for its most workers, so that
    a scenario with one worker runs on the same topology as one with two."""
    most = max([workers or 0, *(s.workers or 0 for s in scenarios)])
    return workers_queues(most or None)


def with_data_path(endpoint: Endpoint, data_path: str | None, engine: str = "auto",
                   workers: int | None = None) -> Endpoint:
    """Run an xdp-ovpn endpoint on the given data path with the given engine and, on XDP,
    data-plane workers (openvpn endpoints are left alone)."""
    if endpoint.program == "xdp-ovpn" and data_path:
        base = endpoint.command()
        flags = ["--data-path", data_path, "--engine", engine]
        if workers and data_path != "socket":
            flags += ["--workers", str(workers)]
        endpoint.command = lambda: [*base, *flags]  # type: ignore[method-assign]
    return endpoint


def server_endpoint(ns: Namespace, spec: TunnelSpec, program: str, data_path: str | None,
                    extra: tuple[str, ...] = (), engine: str = "auto",
                    workers: int | None = None) -> OpenVPNServer:
    server = OpenVPNServer(ns, spec, program=program, extra=extra)
    with_data_path(server, data_path, engine, workers)
    return server


@contextlib.contextmanager
def bring_up(
    scenario: Scenario, lab: Lab, spec: TunnelSpec, mtu: int | None = None, timeout: float = 30,
    engine: str = "auto", workers: int | None = None, rx_queues: int | None = None,
) -> Iterator[Topology]:
    """Build the topology (a veth with `rx_queues` queues in use; None: the kernel's
    choice), start the scenario's endpoints (with its own workers, else `workers`), stop
    them on exit."""
    server_ns, client_ns = two_hosts(lab, mtu, rx_queues)
    workers = scenario.workers or workers
    if not scenario.tunnel:
        yield Topology(scenario, server_ns, client_ns, UNDERLAY[0])
        return
    assert scenario.server and scenario.client
    server = server_endpoint(server_ns, spec, scenario.server, scenario.data_path,
                             engine=engine, workers=workers)
    client = OpenVPNClient(client_ns, server, remote=UNDERLAY[0], program=scenario.client)
    with_data_path(client, scenario.data_path, engine, workers)
    began = time.monotonic()
    with started(server, client, timeout=timeout):
        setup = time.monotonic() - began
        topo = Topology(scenario, server_ns, client_ns, server.tunnel_ipv4, {}, setup,
                        (server, client))
        for role, ep in (("server", server), ("client", client)):
            if ep.proc is not None:
                topo.processes[role] = ep.proc.pid
        yield topo
