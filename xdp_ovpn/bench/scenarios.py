"""What the benchmark compares: one small declarative entry per scenario.

Every scenario runs on the same topology: two namespaces joined by one veth pair,
the server side at 10.1.0.1 and the client side at 10.1.0.2. A tunnel scenario
starts a server and a client from one `TunnelSpec` and aims the traffic at the
server's tunnel address; the bare scenario aims it at the underlay address.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xdp_ovpn.lab.netns import Lab, LabError, Namespace
from xdp_ovpn.lab.openvpn import Endpoint, OpenVPNClient, OpenVPNServer, TunnelSpec, started
from xdp_ovpn.vm.kernels import DKMS_DCO, IN_KERNEL_DCO

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
    dco: bool = False  # openvpn ends with a kernel DCO; else they run with --disable-dco

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
        if not self.dco:
            return None
        module = kernel_dco()
        if module is None:
            return "the kernel has neither the ovpn nor the ovpn-dco-v2 module"
        if module == IN_KERNEL_DCO:
            from xdp_ovpn.lab import sidroot

            if not sidroot.is_built():
                return "the in-kernel ovpn needs openvpn 2.7: the sid root is not built"
        return None

    def openvpn_version(self) -> str:
        """Which openvpn its openvpn ends run: 2.7 (the sid root) for the in-kernel ovpn."""
        return "2.7" if self.dco and kernel_dco() == IN_KERNEL_DCO else "2.6"

    def openvpn_extra(self, program: str) -> tuple[str, ...]:
        """Config lines for an end running `program`: openvpn without DCO says so, so a
        kernel with a DCO module never turns the userspace baseline into DCO unnoticed."""
        return ("disable-dco",) if program == "openvpn" and not self.dco else ()


DCO_MODULES = (IN_KERNEL_DCO, DKMS_DCO)  # Linux's own (openvpn 2.7), the out-of-tree one


def kernel_dco() -> str | None:
    """The DCO module this kernel has (loaded, or loadable), or None."""
    for name in DCO_MODULES:
        if Path("/sys/module", name.replace("-", "_")).exists():
            return name
        if shutil.which("modprobe") and subprocess.run(
                ["modprobe", "-q", name], capture_output=True).returncode == 0:
            return name
    return None


DCO_OPENED = "DCO device"  # openvpn logs "DCO device tun0 opened" when it uses a DCO


def check_dco(endpoint: Endpoint, expected: bool) -> None:
    """Fail the scenario if an openvpn end's log says otherwise than it should about DCO."""
    if endpoint.program != "openvpn":
        return
    used = DCO_OPENED in endpoint.log()
    if used != expected:
        raise LabError(f"openvpn {'did not use' if expected else 'used'} a kernel DCO "
                       f"({'no' if expected else 'a'} '{DCO_OPENED}' line in its log)")


BARE = "bare"
USERSPACE = "openvpn"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(BARE, "bare veth"),
    Scenario(USERSPACE, "openvpn ↔ openvpn (userspace)", "openvpn", "openvpn"),
    # Where the kernel has a DCO (the VM guests): openvpn with its kernel data path.
    Scenario("openvpn-dco", "openvpn ↔ openvpn (kernel DCO)", "openvpn", "openvpn", dco=True),
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
                    workers: int | None = None, openvpn: str = "2.6") -> OpenVPNServer:
    server = OpenVPNServer(ns, spec, program=program, extra=extra, openvpn=openvpn)
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
    version = scenario.openvpn_version()
    server = server_endpoint(server_ns, spec, scenario.server, scenario.data_path,
                             scenario.openvpn_extra(scenario.server), engine, workers, version)
    client = OpenVPNClient(client_ns, server, remote=UNDERLAY[0], program=scenario.client,
                           extra=scenario.openvpn_extra(scenario.client), openvpn=version)
    with_data_path(client, scenario.data_path, engine, workers)
    began = time.monotonic()
    with started(server, client, timeout=timeout):
        setup = time.monotonic() - began
        for ep in (server, client):
            check_dco(ep, scenario.dco)
        topo = Topology(scenario, server_ns, client_ns, server.tunnel_ipv4, {}, setup,
                        (server, client))
        for role, ep in (("server", server), ("client", client)):
            if ep.proc is not None:
                topo.processes[role] = ep.proc.pid
        yield topo
