"""The engine seam: the per-packet loops behind one small interface.

A data-plane worker keeps everything that is not per packet: its loop, the DCO
verbs from the control plane, keepalive and expiry timers, notifications, the BPF peers
mirror, the packet-id ledger, restart and fallback. Per batch it calls an *engine*:

    peers and keys in      add_peer / update_peer / remove_peer, new_key / swap_keys / del_key
    waiting                serve(wake, timeout, ...) poll the packet fds and call the loops
                                                    below until a wake fd (a verb), an
                                                    event or the timeout needs the worker
    packets                rx_xsk(i, budget, now)   AF_XDP RX ring -> decrypt -> TUN
                           rx_socket(budget, now)   UDP socket -> DATA_V2 decrypt -> TUN,
                                                    anything else handed up
                           tx(budget, now)          TUN -> peer lookup -> seal -> UDP socket
                           send(peer_id, payload)   keepalive ping, OCC exit
    out                    events(), peer_stats(), activity(), drops()

Two engines implement it: `python` (pyengine.py: io.py's loops, the reference) and
`native` (the C extension, nativeengine.py). Both give the same bytes to the TUN and the
socket, the same events, counters and drop reasons for the same input: a differential
suite holds them to it.

Drop reasons are part of the contract (both engines count the same strings). Per peer:
"ReplayError", "AuthError", "ParseError", "KeyError_" (the packet could not be opened),
"no key", "no tun", "tun write", "bad source address" (a server's anti-spoofing check),
"IPv6 link-local source" (counted apart, not logged: openvpn clients send router
solicitations from fe80::), "send <errno name>"; engine-wide: "unknown peer-id",
"short frame", "not UDP", "IP fragment", "not IP", "bad UDP length", "not DATA_V2",
"short data packet", "DATA_V1 unsupported", "socket error", "tun read", "no route to peer".
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import select
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from xdp_ovpn.dataplane.api import (
    Address,
    DataPlaneError,
    KeyNeedsRenewal,
    PeerExpired,
    PeerFloated,
    PeerStats,
)
from xdp_ovpn.dataplane.mss import mss_for

ENGINES = ("auto", "native", "python")
RX_BATCH = 64  # AF_XDP descriptors an rx_xsk call
RX_ROUNDS = 4  # rx_xsk calls on one AF_XDP socket before looking at the other fds
BATCH = 64  # datagrams or TUN packets handled before looking at the other fds


@dataclass(frozen=True)
class ControlDatagram:
    """A datagram the engine does not handle (control channel): hand it up as it is."""

    data: bytes
    source: Address


EngineEvent = ControlDatagram | PeerFloated | PeerExpired | KeyNeedsRenewal


@dataclass(frozen=True)
class EngineConfig:
    """What an engine is built with; the same for both engines."""

    single_peer: bool  # client / p2p: the one peer takes every packet, any inner source
    replay_window: int
    replay_time: float
    mss: int = 0  # clamp TCP SYNs to this IPv4 MSS; 0: leave them alone
    gso: bool = False  # egress in UDP_SEGMENT runs (XDP path) or a datagram a packet
    check_source: bool = False  # server: the inner source must belong to the peer
    # The MSS for SYNs of peers whose key is in the epoch format (4 bytes more overhead
    # unless mssfix is "fixed"); None: mss.
    mss_epoch: int | None = None

    def mss_for(self, overhead: int) -> int:
        """The MSS for a key whose packets add `overhead` bytes (its data format)."""
        return mss_for(overhead, self.mss, self.mss_epoch)


class Engine(Protocol):
    """The per-packet work of one worker (see the module docstring)."""

    name: str  # "python" or "native"
    # Whether new_key takes epoch=True (2.7's epoch data format); the control plane offers
    # the format only when the engine has it (epoch_format below).
    epoch_format: bool

    # -- peers and keys: the data of the DCO verbs -------------------------------------
    def add_peer(self, peer_id: int, remote: Address, vpn_ipv4: str | None,
                 vpn_ipv6: str | None, iroutes: Sequence[str], now: float) -> None: ...

    def update_peer(self, peer_id: int, *, remote: Address | None = None,
                    vpn_ipv4: str | None = None, vpn_ipv6: str | None = None,
                    iroutes: Sequence[str] | None = None) -> None: ...

    def remove_peer(self, peer_id: int) -> None: ...

    def peer_ids(self) -> list[int]: ...

    def new_key(self, peer_id: int, slot: int, key_id: int, cipher: str,
                encrypt_key: bytes, encrypt_nonce_tail: bytes, decrypt_key: bytes,
                decrypt_nonce_tail: bytes, ledger: memoryview | None = None,
                ledger_index: int = 0, shared: memoryview | None = None,
                epoch: bool = False) -> None:
        """Install a key in slot 0 (primary) or 1; with `ledger` (a shared "I" array) the
        sender reserves packet-ids in ledger[ledger_index] before using them. `shared`
        (native engine only, instead of the ledger): the key's slot of ledger.Ledger that
        several workers share, holding the live packet-id counter and the replay window.
        `epoch`: the key is in the epoch data format (encrypt_key and decrypt_key are the
        E_1 secrets, events.KeysReady); an engine without `epoch_format` refuses it."""
        ...

    def swap_keys(self, peer_id: int) -> None: ...

    def del_key(self, peer_id: int, slot: int) -> None: ...

    def key_ids(self, peer_id: int) -> tuple[int | None, int | None]: ...

    # -- I/O ---------------------------------------------------------------------------
    def serve(self, wake: tuple[int, ...], timeout: float, read_socket: bool,
              read_tun: bool) -> None:
        """Wait for packets on the AF_XDP sockets, and on the UDP socket and the TUN where
        this worker reads them, and handle them (rx_xsk, rx_socket, tx), until a `wake` fd
        is readable, an event waits for events(), or `timeout` seconds passed."""
        ...

    def add_xsk(self, xsk: object) -> int:
        """Take an AF_XDP socket (xsk.XskSocket) for rx_xsk; returns its index."""
        ...

    def set_tun(self, fd: int, vnet_hdr: bool) -> None:
        """Read and write this (non-blocking) TUN; vnet_hdr: its packets carry a virtio header."""
        ...

    def rx_xsk(self, index: int, budget: int, now: float) -> int:
        """Handle up to `budget` frames of AF_XDP socket `index`; returns how many."""
        ...

    def rx_socket(self, budget: int, now: float) -> int:
        """Handle up to `budget` datagrams waiting on the UDP socket; returns how many."""
        ...

    def tx(self, budget: int, now: float) -> int:
        """Read up to `budget` packets from the TUN and send them; returns how many."""
        ...

    def send(self, peer_id: int, payload: bytes, now: float) -> bool:
        """Encrypt one payload (ping, OCC exit) with the primary key and send it."""
        ...

    # -- out ---------------------------------------------------------------------------
    def events(self) -> list[EngineEvent]:
        """What happened since the last call, in order."""
        ...

    def peer_stats(self, peer_id: int) -> PeerStats: ...

    def activity(self) -> list[tuple[int, float, float]]:
        """(peer-id, last rx, last tx) of every peer, for the keepalive timers."""
        ...

    def drops(self) -> dict[str, int]:
        """Drops no peer can be blamed for."""
        ...

    def close(self) -> None: ...


def poll_and_handle(engine: Engine, xsk_fds: Sequence[int], sock_fd: int, tun_fd: int | None,
                    wake: tuple[int, ...], timeout: float, read_socket: bool,
                    read_tun: bool, has_events: Callable[[], bool]) -> None:
    """Engine.serve in Python, for an engine without a loop of its own (the reference for
    native/loop.c: the same fds, turns and reasons to return)."""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    handlers: dict[int, Callable[[float], object] | None] = {fd: None for fd in wake}
    for index, fd in enumerate(xsk_fds):
        handlers[fd] = functools.partial(_rx_rounds, engine, index)
    if read_socket:
        handlers[sock_fd] = functools.partial(_rx_socket, engine)
    if read_tun and tun_fd is not None:
        handlers[tun_fd] = functools.partial(_tx, engine)
    for fd in handlers:
        poller.register(fd, select.POLLIN)
    while True:
        ms = max(0, math.ceil((deadline - time.monotonic()) * 1000))
        ready = poller.poll(ms)
        if not ready:
            return
        if any(handlers[fd] is None for fd, _ in ready):
            return
        for fd, _ in ready:
            handlers[fd](time.monotonic())  # type: ignore[misc]
        if has_events() or time.monotonic() >= deadline:
            return


def _rx_rounds(engine: Engine, index: int, now: float) -> None:
    for _ in range(RX_ROUNDS):
        if engine.rx_xsk(index, RX_BATCH, now) < RX_BATCH:
            return


def _rx_socket(engine: Engine, now: float) -> None:
    engine.rx_socket(BATCH, now)


def _tx(engine: Engine, now: float) -> None:
    engine.tx(BATCH, now)


def native_available() -> bool:
    """Whether the native engine's extension is built and importable."""
    return importlib.util.find_spec("xdp_ovpn._native") is not None


ENGINE_ENV = "XDP_OVPN_ENGINE"  # what "auto" means when set: runs a whole suite on one engine


def resolve(name: str) -> str:
    """The engine `name` ("auto", "native", "python") stands for here: auto is
    $XDP_OVPN_ENGINE when set, else native where it is built."""
    if name not in ENGINES:
        raise DataPlaneError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    if name == "auto" and os.environ.get(ENGINE_ENV, "auto") != "auto":
        return resolve(os.environ[ENGINE_ENV])
    if name == "auto" and not native_available():
        return "python"
    if name in ("auto", "native"):
        if not native_available():
            raise DataPlaneError("the native engine is not built (xdp_ovpn._native missing)")
        if reason := native_stale():
            raise DataPlaneError(reason)
        return "native"
    return name


def native_stale() -> str | None:
    """Why the built extension does not match the native/ sources beside it (None: it does,
    or there are no sources here to compare with)."""
    from xdp_ovpn import _native
    from xdp_ovpn.dataplane.nativesrc import sources_digest

    here = sources_digest()
    if here is None or getattr(_native, "SOURCES_DIGEST", None) == here:
        return None
    return ("the native engine was built from other sources than native/ holds now: "
            "rebuild it (scripts/setup.sh env)")


def check_workers(count: int, engine: str) -> None:
    """Refuse a data-plane worker count the engine cannot run: several workers share
    each key's packet-ids and replay window through the native engine's shared slots."""
    if count < 1:
        raise DataPlaneError(f"--workers {count}: at least one")
    if count > 1 and engine != "native":
        raise DataPlaneError(f"--workers {count} needs the native engine (the python engine "
                             "keeps its replay windows in one process: one worker)")


def epoch_format(name: str) -> bool:
    """Whether the engine `name` (after `resolve`) does the epoch data format."""
    if resolve(name) == "native":
        from xdp_ovpn.dataplane.nativeengine import NativeEngine

        return NativeEngine.epoch_format
    from xdp_ovpn.dataplane.pyengine import PythonEngine

    return PythonEngine.epoch_format


def make_engine(name: str, sock: socket.socket, config: EngineConfig) -> Engine:
    """An engine by name (after `resolve`) for one worker."""
    if resolve(name) == "native":
        from xdp_ovpn.dataplane.nativeengine import NativeEngine

        return NativeEngine(sock, config)
    from xdp_ovpn.dataplane.pyengine import PythonEngine

    return PythonEngine(sock, config)
