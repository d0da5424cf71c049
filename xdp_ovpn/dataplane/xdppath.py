"""The XDP data path: classifier on the underlay, AF_XDP ingress, TUN egress, supervised.

    underlay ─ XDP classifier ─┬─ DATA_V2 of a peer-id/key-id in `peers` ─► AF_XDP, one per RX queue
                               └─ everything else ─► the UDP socket
    worker process, its engine (engine.py) per batch:
                    AF_XDP RX → decrypt in the UMEM → TUN            (rx_xsk)
                    TUN → encrypt → UDP socket, UDP_SEGMENT batches  (tx)
                    UDP socket: control datagrams up to the control plane, DATA_V2 the
                    classifier passed (key not yet mirrored, fragments) decrypted here
                                                                     (rx_socket)
                    and itself: verbs, keepalive and expiry          (socketpath's worker)

The worker *is* the socket path's worker with AF_XDP sockets added, so the socket is the
fallback for every packet XDP does not steer, and nothing else is ever needed to avoid a
black hole. What it owns beyond that:

- BPF `peers` map in step with the keys: a peer-id/key-id is mirrored only after the worker
  holds that key, and removed before the key or the peer goes. On a server the worker
  also marks the map authoritative, so the classifier drops DATA_V2 for any other peer-id
  (and DATA_V1) instead of passing it up: a server's control plane only hands a client its
  peer-id in the PUSH_REPLY, after the key is installed, so no real peer's data is lost.
  A client or p2p peer takes DATA_V2 of any peer-id on the socket, so it claims nothing.
- BPF `remotes` map: every peer's current address (new_peer, set_peer, floats), so the
  classifier never rate-limits a connected peer's control packets.
- Workers (`workers`, default one per RX queue in use, at most the CPUs), each holding one
  AF_XDP socket per (interface, RX queue) of its share, pinned to its own CPU. The native
  engine keeps each key's packet-id counter and replay window in the ledger's shared slots
  (for a key in the epoch format: its send epoch and counter, its receive epochs and their
  windows), so whichever worker handles a packet, no nonce is used twice and no replay
  taken twice; the python engine runs one worker. The primary (the first) also reads the
  UDP socket and the TUN and keeps the BPF maps (`_XdpWorker`). The queues are those in
  use (rxqueues), not those allocated; a queue that still cannot be bound is left to the
  socket and reported, and only a data plane that binds none fails.
- Supervision: a thread in the control-plane process waits on the worker's pidfd. If the
  worker dies, the thread posts a sentinel on the notification socket; on that (or on a
  failed verb) the handle clears the BPF peers map, the remotes and the authority flag (the
  dead AF_XDP socket already left the XSKMAP, so the classifier passes DATA_V2 up to the
  socket, where it waits), forks a new
  worker with every peer, key and the TUN re-installed, and the new worker mirrors the
  peers again as it takes them. Packet-ids survive the restart through shared memory
  (ledger.py): the native engine keeps each key's live packet-id counter (or epoch and
  counter) and its replay windows in a slot there, so the new worker goes on from the last
  id sent and still knows the ids taken; the python engine reserves ids in blocks in the
  ledger before using them and the new worker starts above the reservation. Either way no
  nonce is used twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import os
import pickle
import select
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xdp_ovpn.capabilities import CAP_BPF, CAP_IPC_LOCK, CAP_NET_ADMIN, CAP_NET_RAW
from xdp_ovpn.dataplane.api import (
    Address,
    DataPlaneError,
    KeySlot,
    Notification,
    PeerExpired,
    PeerFloated,
    PeerStats,
    Privileged,
)
from xdp_ovpn.dataplane.engine import (
    Engine,
    EngineConfig,
    check_workers,
    epoch_format,
    make_engine,
    resolve,
)
from xdp_ovpn.dataplane.handle import CALL_TIMEOUT, WorkerHandle
from xdp_ovpn.dataplane.ledger import Ledger
from xdp_ovpn.dataplane.mss import max_mss
from xdp_ovpn.dataplane.offload import plain_reads, raise_txqueuelen, tun_has_vnet_hdr
from xdp_ovpn.dataplane.rxqueues import RxQueues, rx_queues
from xdp_ovpn.dataplane.worker import BUF, Worker, drain, seqpacket_pair
from xdp_ovpn.dataplane.xsk import XskError, XskSocket
from xdp_ovpn.loader.maps import DEFAULT_CONTROL_LIMITS, ControlLimits
from xdp_ovpn.proto.constants import DEFAULT_REPLAY_TIME, DEFAULT_REPLAY_WINDOW

FRAME_COUNT = 4096  # UMEM frames per AF_XDP socket (8 MiB), fixed at startup
TUN_TXQUEUELEN = 1000  # offload.raise_txqueuelen: fewer tail drops of TCP bursts
_IFF_LOOPBACK = 0x8


# -- underlay discovery ------------------------------------------------------------------


def _inline(fn: Callable[[], None]) -> None:
    fn()


def _unmapped(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class UnderlayLink:
    """An interface the classifier may go on: its name, RX queues and MTU."""

    ifname: str
    queues: RxQueues
    mtu: int


def underlay_interfaces(sock: socket.socket,
                        names: Sequence[str] | None = None) -> list[UnderlayLink]:
    """The interfaces the bound socket's traffic can use, or those `names` that exist.

    A socket bound to an address: the interface holding it. A wildcard socket: every up,
    non-loopback, non-TUN interface with an address (the routes to peers may use any).
    """
    from pyroute2 import IPRoute

    bound = _unmapped(sock.getsockname()[0])
    with IPRoute() as ipr:
        links = {link["index"]: link for link in ipr.get_links()}
        addrs = [] if names else ipr.get_addr()
    chosen: dict[int, None] = {}
    by_name = {link.get_attr("IFLA_IFNAME"): index for index, link in links.items()}
    for name in names or ():
        if name in by_name:
            chosen[by_name[name]] = None
    for addr in addrs:
        link = links.get(addr["index"])
        if link is None or link["flags"] & _IFF_LOOPBACK or not link["flags"] & 1:
            continue
        info = link.get_attr("IFLA_LINKINFO")
        if info is not None and info.get_attr("IFLA_INFO_KIND") == "tun":
            continue
        local = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
        if bound.is_unspecified or (local and _unmapped(local) == bound):
            chosen[addr["index"]] = None
    out = []
    for index in chosen:
        name = links[index].get_attr("IFLA_IFNAME")
        queues = rx_queues(name, links[index].get_attr("IFLA_NUM_RX_QUEUES"))
        out.append(UnderlayLink(name, queues, links[index].get_attr("IFLA_MTU") or 1500))
    return out


def listener_addresses(sock: socket.socket) -> list[tuple[str, int]]:
    """The (address, port) keys the classifier must know for this socket."""
    host, port = sock.getsockname()[:2]
    bound = _unmapped(host)
    if sock.family == socket.AF_INET6 and bound.is_unspecified:
        v6only = sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        return [("::", port)] if v6only else [("::", port), ("0.0.0.0", port)]
    return [(str(bound), port)]


# -- the worker --------------------------------------------------------------------------


@dataclass
class _PeerRecord:
    """What the handle re-installs in a restarted worker."""

    peer_id: int
    remote: Address
    vpn_ipv4: str | None
    vpn_ipv6: str | None
    iroutes: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)  # set_peer keywords, merged
    keys: dict[int, tuple] = field(default_factory=dict)  # slot -> new_key arguments + ledger


@dataclass(frozen=True)
class _WorkerDied:
    """Posted by the supervisor thread on the notification socket."""

    pid: int


# Verbs that take something away: the primary (which unmirrors it) goes first.
_PRIMARY_FIRST = frozenset({"del_peer", "del_key"})


def summed(stats: Sequence[PeerStats]) -> PeerStats:
    """One peer's counters over the workers: summed; the latest activity; the rest the
    primary's (the first)."""
    first = stats[0]
    if len(stats) == 1:
        return first
    drops: dict[str, int] = {}
    for one in stats:
        for reason, count in one.drops.items():
            drops[reason] = drops.get(reason, 0) + count
    counts = {name: sum(getattr(one, name) for one in stats)
              for name in ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes",
                           "link_rx_packets", "link_rx_bytes", "link_tx_packets",
                           "link_tx_bytes")}
    rx = [one.last_rx for one in stats if one.last_rx is not None]
    bad = next((one.last_bad_source for one in stats if one.last_bad_source is not None), None)
    return dataclasses.replace(
        first, **counts, drops=drops, last_rx=max(rx) if rx else None, last_bad_source=bad,
        worker_link_rx_packets=tuple(one.link_rx_packets for one in stats))


@dataclass
class _Underlay:
    """One interface with its classifier maps and RX queues."""

    ifname: str
    queues: int
    mtu: int
    maps: Any  # loader.maps.ClassifierMaps


@dataclass
class _WorkerSlot:
    """One data-plane worker: the RX queues it holds, its CPU, its process."""

    index: int  # 0: the primary
    queues: tuple[tuple[_Underlay, int], ...]
    cpu: int | None  # pinned to it, or None
    cmd: socket.socket | None = None
    pid: int = 0
    bound: int = 0  # queues it holds an AF_XDP socket on
    unbound: list[str] = field(default_factory=list)


class _XdpWorker(Worker):
    """The socket worker plus AF_XDP sockets, a vnet_hdr TUN and the BPF peers mirror.

    With several workers, each holds the AF_XDP sockets of its RX `queues`; the *primary*
    (the first) also reads the UDP socket and the TUN (egress), runs keepalive and expiry,
    and alone keeps the BPF maps; the others decrypt their queues' packets to the TUN.
    """

    def __init__(self, sock: socket.socket, cmd: socket.socket, ctl: socket.socket,
                 ntf: socket.socket, engine: Engine, underlays: Sequence[_Underlay],
                 queues: Sequence[tuple[_Underlay, int]], ledger: Ledger,
                 primary: bool = True, must_bind: bool = True) -> None:
        super().__init__(sock, cmd, ctl, ntf, engine)
        self.primary = primary
        if not primary:
            self.reads_socket = self.reads_tun = False
        self.underlays = underlays if primary else []  # the maps it keeps in step
        self.remotes: dict[int, Address] = {}  # what `remotes` holds, by peer-id
        # After `user`: the peers map mirror still needs bpf() (refused without CAP_BPF
        # where unprivileged bpf is off, before Linux 6.5).
        self.keep_caps = (CAP_BPF,) if self.underlays else ()
        self.ledger = ledger
        self.xsks: list[XskSocket] = []
        self.unbound: list[str] = []  # "IF queue N: why", for the parent to log
        for under, queue in queues:
            why = self._bind_queue(under, queue)
            if why:
                self.unbound.append(f"{under.ifname} queue {queue}: {why}")
        if must_bind and queues and not self.xsks:
            raise DataPlaneError("no RX queue takes an AF_XDP socket: " + "; ".join(self.unbound))

    def _keepalive(self, now: float) -> None:
        """Pings and expiry are the primary's (it sees every worker's last packet)."""
        if self.primary:
            super()._keepalive(now)

    def _bind_queue(self, under: _Underlay, queue: int) -> str | None:
        """An AF_XDP socket on the queue, entered in the classifier's XSKMAP; else why not
        (with no XSKMAP entry the classifier passes the queue's packets up to the socket)."""
        from xdp_ovpn.loader.errors import MapError

        try:
            xsk = XskSocket(under.ifname, queue, tx_size=0, comp_size=64,
                            frame_count=FRAME_COUNT, fill_size=FRAME_COUNT)
        except XskError as exc:
            return str(exc)
        xsk.fill(xsk.umem.frames())
        try:
            under.maps.bind_queue(queue, xsk.fileno())
        except MapError as exc:  # e.g. beyond the XSKMAP's size
            xsk.close()
            return f"not in the classifier's map: {exc}"
        self.xsks.append(xsk)
        self.engine.add_xsk(xsk)  # its loop (serve) polls it
        return None

    def restore(self, records: Sequence[_PeerRecord], tun: tuple[int, int] | None) -> None:
        """Install what a previous worker held (before the loop: nothing races it)."""
        for rec in records:
            self.cmd_new_peer(rec.peer_id, rec.remote, rec.vpn_ipv4, rec.vpn_ipv6, rec.iroutes)
            if rec.settings:
                self.cmd_set_peer(rec.peer_id, **rec.settings)
            for slot, args in rec.keys.items():
                self.cmd_new_key(rec.peer_id, slot, *args)
        if tun is not None:
            self.attach_tun(os.dup(tun[0]), tun[1])

    def _gone(self, peer_id: int) -> None:
        self._mirror(peer_id, ())  # the engine no longer holds it
        self._mirror_remote(peer_id, None)
        super()._gone(peer_id)

    def _notify(self, event: Notification) -> None:
        if isinstance(event, PeerFloated):
            self._mirror_remote(event.peer_id, event.new_remote)
        super()._notify(event)

    def cmd_drops(self) -> dict[str, int]:
        """Drops no peer can be blamed for: socket, AF_XDP rings (kernel counters), loops."""
        drops = super().cmd_drops()
        if self.unbound:  # not packets: RX queues whose packets all take the socket
            drops["RX queues without AF_XDP"] = len(self.unbound)
        for xsk in self.xsks:
            for name, count in dataclasses.asdict(xsk.statistics()).items():
                if count:
                    drops[f"AF_XDP {name}"] = drops.get(f"AF_XDP {name}", 0) + count
        return drops

    # -- the BPF peers mirror -----------------------------------------------------------

    def _mirror(self, peer_id: int, key_ids: Sequence[int]) -> None:
        for under in self.underlays:
            if key_ids:
                under.maps.set_peer(peer_id, key_ids)
            else:
                under.maps.del_peer(peer_id)

    def _mirror_remote(self, peer_id: int, remote: Address | None) -> None:
        """Keep the peer's address in `remotes`; a miss only leaves it rate-limited."""
        from xdp_ovpn.loader.errors import MapError

        old = self.remotes.pop(peer_id, None)
        if remote is not None:
            self.remotes[peer_id] = remote
        for under in self.underlays:
            with contextlib.suppress(MapError, ValueError):
                if old is not None and old not in self.remotes.values():
                    under.maps.remove_remote(*old)
                if remote is not None:
                    under.maps.add_remote(*remote)

    def take_authority(self) -> None:
        """Tell the classifier `peers` is all a server serves (after restore: complete)."""
        for under in self.underlays:
            under.maps.set_authoritative(True)

    def _key_ids(self, peer_id: int, without: int | None = None) -> list[int]:
        ids = self.engine.key_ids(peer_id)
        return [key_id for slot, key_id in enumerate(ids) if key_id is not None and slot != without]

    # -- the TUN ------------------------------------------------------------------------

    def tun_vnet_hdr(self, fd: int) -> bool:
        """A vnet_hdr TUN gets GSO super-packets written; its reads stay plain packets."""
        vnet_hdr = tun_has_vnet_hdr(fd)
        if vnet_hdr:
            plain_reads(fd)
        with contextlib.suppress(OSError):
            raise_txqueuelen(fd, TUN_TXQUEUELEN)
        return vnet_hdr

    # -- verbs that touch the mirror ----------------------------------------------------

    def cmd_new_peer(self, peer_id: int, remote: Address, *args: Any, **kw: Any) -> None:
        super().cmd_new_peer(peer_id, remote, *args, **kw)
        self._mirror_remote(peer_id, (remote[0], remote[1]))

    def cmd_set_peer(self, peer_id: int, **kw: Any) -> None:
        super().cmd_set_peer(peer_id, **kw)
        if kw.get("remote"):
            self._mirror_remote(peer_id, (kw["remote"][0], kw["remote"][1]))

    def cmd_del_peer(self, peer_id: int, reason: str) -> None:
        self._mirror(peer_id, ())
        self._mirror_remote(peer_id, None)
        super().cmd_del_peer(peer_id, reason)

    def cmd_new_key(self, peer_id: int, slot: int, key_id: int, cipher: str, ek: bytes,
                    en: bytes, dk: bytes, dn: bytes, epoch: bool, ledger_index: int) -> None:
        if self.engine.key_ids(peer_id)[slot] is not None:  # replaced: stop steering it first
            self._mirror(peer_id, self._key_ids(peer_id, without=slot))
        shared = self.ledger.slot(ledger_index) if self.engine.name == "native" else None
        if shared is not None:  # what the workers share: packet-ids or epochs, windows
            self.engine.new_key(peer_id, slot, key_id, cipher, ek, en, dk, dn, shared=shared,
                                epoch=epoch)
        else:
            self.engine.new_key(peer_id, slot, key_id, cipher, ek, en, dk, dn,
                                self.ledger.ids, ledger_index, epoch=epoch)
        self._mirror(peer_id, self._key_ids(peer_id))

    def cmd_del_key(self, peer_id: int, slot: int) -> None:
        self._mirror(peer_id, self._key_ids(peer_id, without=slot))
        super().cmd_del_key(peer_id, slot)


# -- the control-plane handle ------------------------------------------------------------


def _key_slot_size(engine: str, replay_window: int, replay_time: float) -> int:
    """Bytes of a key's slot the native engine's workers share; 0: the ledger alone."""
    if engine != "native":
        return 0
    from xdp_ovpn import _native

    try:
        return _native.key_shared_size(replay_window, float(replay_time))
    except ValueError as exc:
        raise DataPlaneError(str(exc)) from None


class XdpDataPlane(WorkerHandle):
    """Control-plane handle of the XDP data path (implements api.DataPlane)."""

    name = "xdp"
    # The TUN should be opened with IFF_VNET_HDR: ingress then writes TCP runs as GSO
    # super-packets (offload.TcpCoalescer). Without it every packet is one write.
    tun_vnet_hdr = True
    # A replacement worker opens AF_XDP sockets (NET_RAW), pins its UMEM (IPC_LOCK),
    # binds them in the XSK map and mirrors peers (BPF), raises the TUN's queue (NET_ADMIN).
    restart_capabilities = frozenset({CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK, CAP_BPF})

    def __init__(
        self,
        sock: socket.socket,
        *,
        single_peer: bool = False,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
        interfaces: Sequence[str] | None = None,
        xdp_mode: str | None = None,
        control_limits: ControlLimits | None = DEFAULT_CONTROL_LIMITS,
        log: logging.Logger | None = None,
        engine: str = "auto",
        mss: int | None = None,
        workers: int | None = None,
        mss_epoch: int | None = None,
    ) -> None:
        """`control_limits`: token buckets for control packets from addresses that are not
        a connected peer's; None: no limit. `workers`: data-plane worker processes, each
        holding some of the RX queues (default: the RX queues in use, at most the CPUs;
        one with the python engine)."""
        super().__init__()
        self.engine = resolve(engine)  # the engine's name, for the log and reports
        self.epoch_format = False  # set once the engine is known to start
        self._sock = sock
        self._control_limits = control_limits
        self._log = log or logging.getLogger(__name__)
        self._classifiers: list[Any] = []
        self._underlays: list[_Underlay] = []
        self._peers: dict[int, _PeerRecord] = {}
        self._tun: tuple[int, int] | None = None
        self._workers: list[_WorkerSlot] = []
        self._identity: tuple[int, int] | None = None  # (uid, gid) after drop_privileges
        # Where workers are forked: here until `user`, then where capabilities were kept.
        self._privileged: Privileged = _inline
        self._ledger = Ledger(key_slot_size=_key_slot_size(self.engine, replay_window,
                                                          replay_time))
        self._wake_r, self._wake_w = os.pipe()
        try:
            self._attach(interfaces, xdp_mode)
            self._limit_control(True)
            if mss is None:  # no mssfix given: TCP never needs fragments on any underlay
                link_mtu = min(u.mtu for u in self._underlays)
                outer_ipv6 = sock.family == socket.AF_INET6
                mss = max_mss(link_mtu, outer_ipv6)
                mss_epoch = max_mss(link_mtu, outer_ipv6, epoch=True)
            self._config = EngineConfig(single_peer, replay_window, replay_time, mss=mss,
                                        gso=True, check_source=not single_peer,
                                        mss_epoch=mss_epoch)
            self._workers = self._plan_workers(workers)
            self.epoch_format = epoch_format(self.engine)
            for slot in self._workers:
                self._spawn(slot)
            if len(self._workers) > 1 and not self.af_xdp_queues:
                raise DataPlaneError("no RX queue takes an AF_XDP socket: "
                                     + "; ".join(self.unbound))
        except BaseException:
            self.close()
            raise

    def _attach(self, interfaces: Sequence[str] | None, mode: str | None) -> None:
        """The classifier on every underlay (or those named); one that refuses it is
        skipped with a warning, its traffic left to the UDP socket."""
        from xdp_ovpn.loader.classifier import Classifier
        from xdp_ovpn.loader.errors import LoaderError

        links = underlay_interfaces(self._sock, interfaces)
        if not links and not interfaces:
            raise DataPlaneError("no underlay interface carries the socket's traffic")
        failed = [f"{name}: no such interface" for name in interfaces or ()
                  if name not in {link.ifname for link in links}]
        for link in links:
            try:
                classifier = Classifier()
                self._classifiers.append(classifier)
                attachment = classifier.attach(link.ifname, mode, pin=False)
                for addr, port in listener_addresses(self._sock):
                    classifier.maps.add_listener(addr, port)
            except LoaderError as exc:
                failed.append(f"{link.ifname}: {exc}")
                continue
            self._underlays.append(_Underlay(link.ifname, link.queues.in_use, link.mtu,
                                             classifier.maps))
            self._log.info("XDP classifier attached to %s (%s, %s)", link.ifname,
                           attachment.mode, link.queues.describe())
        if not self._underlays:
            raise DataPlaneError("XDP attaches to no interface: " + "; ".join(failed))
        for why in failed:
            self._log.warning("WARNING: XDP skipped on %s; its traffic takes the UDP socket",
                              why)

    def _limit_control(self, on: bool) -> None:
        for under in self._underlays:
            under.maps.set_control_limits(self._control_limits if on else None)

    def _plan_workers(self, count: int | None) -> list[_WorkerSlot]:
        """The workers and the RX queues each holds (round robin), pinned to distinct CPUs
        where there are as many."""
        queues = [(under, queue) for under in self._underlays for queue in range(under.queues)]
        cpus = sorted(os.sched_getaffinity(0))
        if count is None:
            count = min(len(queues), len(cpus)) if self.engine == "native" else 1
        count = max(count, 1)
        check_workers(count, self.engine)
        if count > len(queues):
            raise DataPlaneError(f"--workers {count}: only {len(queues)} RX queue(s) in use "
                                 f"on {', '.join(self.interfaces)}")
        pin = count > 1 and len(cpus) >= count
        return [_WorkerSlot(i, tuple(queues[i::count]), cpus[i] if pin else None)
                for i in range(count)]

    @property
    def pids(self) -> list[int]:
        """Every worker's pid, the primary first (0: not running)."""
        return [slot.pid for slot in self._workers]

    def _recount(self) -> None:
        """The handle's view of its workers (pid: the primary's, which reads the UDP
        socket and the TUN; the AF_XDP queues bound and unbound over all)."""
        self._pid = self._workers[0].pid if self._workers else 0
        self._cmd = self._workers[0].cmd if self._workers else None
        self.af_xdp_queues = sum(slot.bound for slot in self._workers)
        self.unbound = [why for slot in self._workers for why in slot.unbound]

    @property
    def interfaces(self) -> list[str]:
        return [u.ifname for u in self._underlays]

    def maps(self, ifname: str) -> Any:
        """The classifier maps on ifname (counters, peers) for stats and tests."""
        for under in self._underlays:
            if under.ifname == ifname:
                return under.maps
        raise DataPlaneError(f"no XDP classifier on {ifname}")

    # -- worker lifecycle ---------------------------------------------------------------

    def _spawn(self, slot: _WorkerSlot, xdp: bool = True) -> None:
        """Fork worker `slot` holding every recorded peer; without `xdp` it only uses the
        socket (no AF_XDP sockets, nothing mirrored: the classifier passes all up)."""
        cmd, worker_cmd = seqpacket_pair()
        primary = slot.index == 0
        queues = [(under, q) for under, q in slot.queues] if xdp else []
        records = list(self._peers.values())
        pid = os.fork()
        if pid == 0:  # the worker: never returns
            status = 0
            try:
                for s in (cmd, self._ctl, self._ntf):
                    s.close()
                for other in self._workers:
                    if other.cmd is not None:
                        other.cmd.close()
                if slot.cpu is not None:
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(0, {slot.cpu})
                try:
                    engine = make_engine(self.engine, self._sock, self._config)
                    worker = _XdpWorker(self._sock, worker_cmd, self._worker_ctl,
                                        self._worker_ntf, engine,
                                        self._underlays if xdp else [], queues, self._ledger,
                                        primary=primary, must_bind=len(self._workers) == 1)
                    worker.restore(records, self._tun)
                    if primary and not self._config.single_peer:
                        worker.take_authority()
                    if self._identity is not None:
                        worker.cmd_drop_privileges(*self._identity)
                except (XskError, DataPlaneError, OSError, ValueError) as exc:
                    worker_cmd.send(pickle.dumps((False, str(exc))))  # the parent says it
                    os._exit(1)
                worker_cmd.send(pickle.dumps((True, (os.getpid(), worker.unbound))))
                worker.run()
            except BaseException:
                status = 1
                with contextlib.suppress(Exception):
                    traceback.print_exc()
            finally:
                os._exit(status)
        worker_cmd.close()
        cmd.settimeout(CALL_TIMEOUT)
        slot.cmd, slot.pid = cmd, pid
        try:
            reply = cmd.recv(BUF)
        except OSError as exc:
            reply = pickle.dumps((False, f"no answer: {exc}"))
        ok, value = pickle.loads(reply) if reply else (False, "exited during setup")
        if not ok:
            self._reap(slot, kill=True)
            raise DataPlaneError(f"XDP data-plane worker: {value}")
        slot.unbound = value[1]
        slot.bound = len(queues) - len(slot.unbound)
        self._recount()
        for why in slot.unbound:
            self._log.warning("WARNING: no AF_XDP socket on %s; the UDP socket takes its "
                              "packets", why)
        threading.Thread(target=self._supervise, args=(pid,), daemon=True,
                         name=f"xdp-worker-{pid}").start()

    def _supervise(self, pid: int) -> None:
        """Wait for a worker to exit; tell the control plane's loop through the ntf socket."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            ready, _, _ = select.select([pidfd, self._wake_r], [], [])
            if pidfd in ready and not self._closed:
                self._worker_ntf.send(pickle.dumps(_WorkerDied(pid)))
        except (OSError, ValueError):  # closed under us: the handle is shutting down
            pass
        finally:
            os.close(pidfd)

    def _reap(self, slot: _WorkerSlot, kill: bool) -> None:
        pid, slot.pid = slot.pid, 0
        slot.bound, slot.unbound = 0, []
        if slot.cmd is not None:
            slot.cmd.close()
            slot.cmd = None
        self._recount()
        if kill:
            self._kill(pid)
        elif pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def _restart(self, slot: _WorkerSlot, why: str) -> None:
        """Replace a dead or stuck worker. The primary's death clears the BPF maps (the
        socket carries DATA_V2 meanwhile); another's only takes its AF_XDP sockets out of
        the XSKMAP, so its queues fall back to the socket while the others go on."""
        from xdp_ovpn.loader.errors import MapError

        self._reap(slot, kill=True)
        primary = slot.index == 0
        for under in self._underlays if primary else ():
            # Nothing steered or dropped until a new worker says. Without CAP_BPF any more
            # the entries stay; with the AF_XDP socket gone the classifier passes their
            # packets up to the socket anyway.
            with contextlib.suppress(MapError, OSError):
                under.maps.forget_data_plane()
        self.restarts += 1
        try:
            self._privileged(lambda: self._spawn(slot))
        except DataPlaneError as exc:
            if not primary:  # its queues stay on the socket, the primary reads it
                self._log.warning("WARNING: %s; its RX queues take the UDP socket", exc)
                return
            # E.g. AF_XDP refused: keep the tunnel on the socket rather than lose it. Nobody
            # mirrors the peers' addresses now, so their control packets must not be limited.
            self._log.warning("WARNING: %s; the data plane goes on without AF_XDP", exc)
            with contextlib.suppress(MapError, OSError):
                self._limit_control(False)
            self._spawn(slot, xdp=False)
        else:
            if primary:
                with contextlib.suppress(MapError, OSError):
                    self._limit_control(True)
        which = f" (worker {slot.index + 1} of {len(self._workers)})" if len(
            self._workers) > 1 else ""
        self._log.info("Data-plane worker %s: restarted as pid %d with %d peer(s)%s", why,
                       slot.pid, len(self._peers), which)

    # -- verbs --------------------------------------------------------------------------

    def _call(self, verb: str, *args: Any, fds: Sequence[int] = (), **kw: Any) -> Any:
        """The verb to every worker, the primary's answer. The primary mirrors keys and
        peers into the BPF maps: it is called last when something is added (steered only
        once every worker holds it) and first when something goes."""
        replies = self._call_all(verb, *args, fds=fds, **kw)
        return replies[0]

    def _call_all(self, verb: str, *args: Any, fds: Sequence[int] = (),
                  **kw: Any) -> list[Any]:
        """The verb to every running worker; their answers, the primary's first."""
        if self._closed:
            raise DataPlaneError("data plane is closed")
        order = list(self._workers)
        if verb not in _PRIMARY_FIRST:
            order = order[1:] + order[:1]
        message = pickle.dumps((verb, args, kw))
        replies = {}
        for slot in order:
            if slot.index and not slot.pid:
                continue  # it could not be replaced: its queues are on the socket
            replies[slot.index] = self._call_one(slot, message, fds)
        return [replies[index] for index in sorted(replies)]

    def _call_one(self, slot: _WorkerSlot, message: bytes, fds: Sequence[int]) -> Any:
        for attempt in (1, 2):
            reply = self._exchange_with(slot, message, fds)
            if reply is not None:
                break
            if attempt == 2:
                raise DataPlaneError("data-plane worker not answering")
            self._restart(slot, "gone")
        ok, value = pickle.loads(reply)
        if not ok:
            raise DataPlaneError(value)
        return value

    def _call_primary(self, verb: str, *args: Any) -> Any:
        if self._closed:
            raise DataPlaneError("data plane is closed")
        return self._call_one(self._workers[0], pickle.dumps((verb, args, {})), ())

    def _exchange_with(self, slot: _WorkerSlot, message: bytes,
                       fds: Sequence[int]) -> bytes | None:
        if slot.cmd is None:
            return None
        try:
            if fds:
                socket.send_fds(slot.cmd, [message], list(fds))
            else:
                slot.cmd.send(message)
            return slot.cmd.recv(BUF) or None
        except OSError:
            return None

    def new_peer(self, peer_id: int, remote: Address, vpn_ipv4: str | None = None,
                 vpn_ipv6: str | None = None, iroutes: Sequence[str] = ()) -> None:
        remote = (remote[0], remote[1])
        self._call("new_peer", peer_id, remote, vpn_ipv4, vpn_ipv6, tuple(iroutes))
        self._peers[peer_id] = _PeerRecord(peer_id, remote, vpn_ipv4, vpn_ipv6, tuple(iroutes))

    def set_peer(self, peer_id: int, **kw: Any) -> None:
        self._call("set_peer", peer_id, **kw)
        rec = self._peers.get(peer_id)
        if rec is None:
            return
        for name, value in kw.items():
            if value is None:
                continue
            if name == "remote":
                rec.remote = (value[0], value[1])
            elif name in ("vpn_ipv4", "vpn_ipv6"):
                setattr(rec, name, value)
            elif name == "iroutes":
                rec.iroutes = tuple(value)
            else:
                rec.settings[name] = value

    def del_peer(self, peer_id: int, reason: str = "userspace") -> None:
        try:
            self._call("del_peer", peer_id, reason)
        finally:
            self._forget(peer_id)

    def _forget(self, peer_id: int) -> None:
        rec = self._peers.pop(peer_id, None)
        if rec is not None:
            for args in rec.keys.values():
                self._ledger.release(args[-1])

    def new_key(self, peer_id: int, slot: KeySlot, key_id: int, cipher: str,
                encrypt_key: bytes, encrypt_nonce_tail: bytes,
                decrypt_key: bytes, decrypt_nonce_tail: bytes, epoch: bool = False) -> None:
        index = self._ledger.allocate()
        args = (key_id, cipher, bytes(encrypt_key), bytes(encrypt_nonce_tail),
                bytes(decrypt_key), bytes(decrypt_nonce_tail), epoch, index)
        try:
            self._call("new_key", peer_id, int(slot), *args)
        except BaseException:
            self._ledger.release(index)
            raise
        rec = self._peers.get(peer_id)
        if rec is not None:
            old = rec.keys.get(int(slot))
            if old is not None:
                self._ledger.release(old[-1])
            rec.keys[int(slot)] = args

    def swap_keys(self, peer_id: int) -> None:
        self._call("swap_keys", peer_id)
        rec = self._peers.get(peer_id)
        if rec is not None:
            keys = rec.keys
            rec.keys = {1 - slot: args for slot, args in keys.items()}

    def del_key(self, peer_id: int, slot: KeySlot) -> None:
        self._call("del_key", peer_id, int(slot))
        rec = self._peers.get(peer_id)
        if rec is not None and int(slot) in rec.keys:
            self._ledger.release(rec.keys.pop(int(slot))[-1])

    def get_peer(self, peer_id: int) -> PeerStats:
        return summed(self._call_all("get_peer", peer_id))

    def peers(self) -> list[int]:
        return self._call_primary("peers")

    def drops(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for drops in self._call_all("drops"):
            for reason, count in drops.items():
                total[reason] = total.get(reason, 0) + count
        return total

    def attach_tun(self, tun_fd: int, mtu: int) -> None:
        self._call("attach_tun", mtu, fds=[tun_fd])
        if self._tun is not None:
            os.close(self._tun[0])
        self._tun = (os.dup(tun_fd), mtu)  # for a restarted worker

    def drop_privileges(self, uid: int, gid: int, privileged: Privileged) -> None:
        self._call("drop_privileges", uid, gid)
        self._identity, self._privileged = (uid, gid), privileged

    def send_exit(self, peer_id: int) -> None:
        self._call_primary("send_exit", peer_id)

    # -- notifications and control datagrams ----------------------------------------------

    def notifications(self) -> list[Notification]:
        out: list[Notification] = []
        for frame in drain(self._ntf):
            note = pickle.loads(frame)
            if isinstance(note, _WorkerDied):
                slot = next((w for w in self._workers if w.pid == note.pid), None)
                if slot is not None and not self._closed:
                    try:
                        self._restart(slot, "died")
                    except DataPlaneError as exc:
                        self._log.info("Data-plane worker cannot restart: %s", exc)
                continue
            if isinstance(note, PeerFloated) and note.peer_id in self._peers:
                self._peers[note.peer_id].remote = note.new_remote
                self._tell_others("set_peer", note.peer_id, remote=note.new_remote)
            elif isinstance(note, PeerExpired):
                if note.peer_id not in self._peers:
                    continue  # another worker reported it first
                self._forget(note.peer_id)
                self._tell_others("del_peer", note.peer_id, note.reason)
            out.append(note)
        return out

    def _tell_others(self, verb: str, *args: Any, **kw: Any) -> None:
        """What one worker saw (a float, a peer gone) to the workers that did not see it;
        the one that did refuses or repeats it harmlessly."""
        if len(self._workers) == 1:
            return
        message = pickle.dumps((verb, args, kw))
        for slot in self._workers:  # each on its own: one refusing stops no other
            if slot.pid:
                with contextlib.suppress(DataPlaneError):
                    self._call_one(slot, message, ())

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker, detach XDP, free the ledger."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        for slot in self._workers:
            if slot.cmd is not None:
                slot.cmd.close()  # the worker exits on EOF
                slot.cmd = None
        for slot in self._workers:
            for _ in range(100 if slot.pid else 0):
                if os.waitpid(slot.pid, os.WNOHANG)[0]:
                    slot.pid = 0
                    break
                time.sleep(0.01)
            self._reap(slot, kill=True)
        for classifier in self._classifiers:
            with contextlib.suppress(Exception):
                classifier.close()
        self._classifiers.clear()
        if self._tun is not None:
            os.close(self._tun[0])
            self._tun = None
        self._close_channels()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._ledger.close()
