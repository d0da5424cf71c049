"""Namespaces, veth links and processes that are always torn down.

Every name carries the owning pid (``xo<pid>-<tag>``) so parallel runs never
collide and `cleanup_stale` can remove what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from pyroute2 import IPRoute, NetNS, netns

from xdp_ovpn.vm.pace import scaled

NETNS_DIR = Path("/var/run/netns")
_PREFIX = "xo"
_counter = itertools.count()


class LabError(Exception):
    """A topology could not be built."""


def _owner_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def interrupt_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C in this process, so labs tear down.

    Forked children (pyroute2's netns helpers among them) inherit the handler; for
    them SIGTERM keeps its default meaning, or they could never be stopped.
    """
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def sweep_own_namespaces() -> None:
    """Remove every namespace of this process, tracked by a Lab or not (after an interrupt)."""
    prefix = f"{_PREFIX}{os.getpid()}-"
    for name in netns.listnetns():
        if name.startswith(prefix):
            _kill_namespace_pids(name)
            with contextlib.suppress(OSError):
                netns.remove(name)


def cleanup_stale() -> list[str]:
    """Remove lab namespaces whose owning process is gone; return their names."""
    removed = []
    for name in netns.listnetns():
        if not name.startswith(_PREFIX) or "-" not in name:
            continue
        pid_text = name[len(_PREFIX) : name.index("-")]
        if pid_text.isdigit() and not _owner_alive(int(pid_text)):
            _kill_namespace_pids(name)
            with contextlib.suppress(OSError):
                netns.remove(name)
            removed.append(name)
    return removed


def _kill_namespace_pids(name: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in out.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class Namespace:
    """One network namespace of a lab; run commands and processes inside it."""

    def __init__(self, lab: Lab, tag: str) -> None:
        self.lab = lab
        self.tag = tag
        self.name = f"{_PREFIX}{os.getpid()}-{tag}"
        self._ipr: NetNS | None = None

    def create(self) -> None:
        netns.create(self.name)
        self.run(["ip", "link", "set", "lo", "up"])

    @property
    def ipr(self) -> NetNS:
        """A pyroute2 netlink socket inside this namespace (opened once)."""
        if self._ipr is None:
            self._ipr = NetNS(self.name)
        return self._ipr

    def _wrap(self, cmd: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(
        self, cmd: Sequence[str], check: bool = True, timeout: float = 60, **kw
    ) -> subprocess.CompletedProcess:
        """Run a command to completion inside the namespace; output captured as text."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        proc = subprocess.run(self._wrap(cmd), timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise LabError(
                f"{' '.join(cmd)} in {self.tag} exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout or '').strip()[-500:]}"
            )
        return proc

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        """Start a background process inside the namespace; the lab stops it at teardown."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(self._wrap(cmd), **kw)
        self.lab._processes.append(proc)
        return proc

    def add_address(self, ifname: str, cidr: str) -> None:
        family = "-6" if ":" in cidr else "-4"
        extra = ["nodad"] if family == "-6" else []
        self.run(["ip", family, "addr", "add", cidr, "dev", ifname, *extra])

    def add_route(self, dst: str, via: str | None = None, dev: str | None = None) -> None:
        family = "-6" if ":" in dst or (via and ":" in via) else "-4"
        cmd = ["ip", family, "route", "replace", dst]
        if via:
            cmd += ["via", via]
        if dev:
            cmd += ["dev", dev]
        self.run(cmd)

    def ifindex(self, ifname: str) -> int:
        found = self.ipr.link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"no interface {ifname} in {self.tag}")
        return found[0]

    def close(self) -> None:
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()
            self._ipr = None
        _kill_namespace_pids(self.name)
        with contextlib.suppress(OSError):
            netns.remove(self.name)


class Lab:
    """A topology of namespaces and veth pairs, removed on exit even on errors.

    >>> with Lab() as lab:
    ...     a, b = lab.add_namespace("a"), lab.add_namespace("b")
    ...     lab.link(a, b, addrs=("10.1.0.1/24", "10.1.0.2/24"))
    """

    def __init__(self) -> None:
        self.namespaces: list[Namespace] = []
        self._processes: list[subprocess.Popen] = []
        self._id = next(_counter)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_namespace(self, tag: str) -> Namespace:
        ns = Namespace(self, f"{self._id}{tag}")
        # Recorded before it exists, so a signal during creation cannot leak it.
        self.namespaces.append(ns)
        ns.create()
        return ns

    def link(
        self,
        a: Namespace,
        b: Namespace,
        addrs: tuple[str | None, str | None] = (None, None),
        names: tuple[str, str] = ("veth0", "veth0"),
        rx_queues: int | None = None,
        extra_addrs: Sequence[tuple[str | None, str | None]] = (),
        mtu: int | None = None,
    ) -> tuple[str, str]:
        """Join two namespaces with a veth pair; return the interface names (a, b).

        Without `rx_queues` the pair is what `ip link add A type veth peer name B` makes
        (the kernel's choice: one RX queue in use of one per possible CPU); with it, that
        many RX and TX queues allocated and in use on both ends.
        """
        tmp_a = f"xo{os.getpid() % 100000}{next(_counter)}a"
        tmp_b = tmp_a[:-1] + "b"
        queues = {"num_rx_queues": rx_queues, "num_tx_queues": rx_queues} if rx_queues else {}
        with IPRoute() as ipr:
            try:
                peer = {"ifname": tmp_b, **queues}
                ipr.link("add", ifname=tmp_a, kind="veth", peer=peer, **queues)
                for tmp, ns in ((tmp_a, a), (tmp_b, b)):
                    idx = ipr.link_lookup(ifname=tmp)[0]
                    ipr.link("set", index=idx, net_ns_fd=ns.name)
            except Exception as exc:
                for tmp in (tmp_a, tmp_b):
                    with contextlib.suppress(Exception):
                        ipr.link("del", ifname=tmp)
                raise LabError(f"cannot create veth pair: {exc}") from exc
        for tmp, ns, name, addr, others in (
            (tmp_a, a, names[0], addrs[0], [e[0] for e in extra_addrs]),
            (tmp_b, b, names[1], addrs[1], [e[1] for e in extra_addrs]),
        ):
            ns.run(["ip", "link", "set", tmp, "name", name])
            if mtu:
                ns.run(["ip", "link", "set", name, "mtu", str(mtu)])
            ns.run(["ip", "link", "set", name, "up"])
            for cidr in [addr, *others]:
                if cidr:
                    ns.add_address(name, cidr)
        return names

    def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
        """Poll until predicate() is true; False on timeout (tests decide what that means).
        The timeout is the host's: an emulated CPU gets it scaled (vm.pace)."""
        deadline = time.monotonic() + scaled(timeout)
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(interval)
        return bool(predicate())

    def close(self) -> None:
        """Stop every process, then remove every namespace (veths go with them)."""
        for proc in reversed(self._processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in self._processes:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._processes.clear()
        for ns in reversed(self.namespaces):
            ns.close()
        self.namespaces.clear()
