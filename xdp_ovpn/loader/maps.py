"""Typed accessors for the classifier's maps, over plain map fds.

The accessors speak bpf(2) directly, not bcc, so a second process (`xdp-ovpn stats`) reads the
pinned maps without compiling anything. Layouts mirror the structs in bpf/classifier.c.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import ipaddress
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from pathlib import Path

from xdp_ovpn.loader import syscall
from xdp_ovpn.loader.errors import MapError
from xdp_ovpn.proto.constants import KEY_ID_COUNT, Opcode

MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 1, 2, 3, 4
BPF_ANY = 0


class Verdict(IntEnum):
    """Why the classifier did what it did: index into verdict_stats (passed to C as V_*)."""

    PASS_OTHER = 0  # not for a listener, or not parseable as UDP
    PASS_FRAGMENT = 1
    PASS_CONTROL = 2
    PASS_DATA_V1 = 3
    PASS_UNKNOWN_PEER = 4
    PASS_UNKNOWN_KEY = 5
    PASS_NO_SOCKET = 6  # would redirect, but no AF_XDP socket on this queue
    PASS_OBSERVE = 7  # would redirect, but observe mode
    REDIRECT = 8
    DROP_SHORT = 9
    DROP_BAD_OPCODE = 10
    DROP_CONTROL_SOURCE = 11  # control packet over its source address:port's bucket
    DROP_CONTROL_GLOBAL = 12  # control packet over the bucket all sources share
    DROP_UNKNOWN_PEER = 13  # DATA_V2 for a peer-id the (authoritative) data plane lacks
    DROP_DATA_V1 = 14  # the (authoritative) data plane never takes DATA_V1


# struct config flags
CFG_OBSERVE = 1
CFG_CONTROL_LIMIT = 2
MAP_NAMES = (
    "listeners", "peers", "remotes", "authority", "peer_stats", "opcode_stats",
    "verdict_stats", "config", "source_buckets", "global_bucket", "xsks",
)  # fmt: skip

_ENDPOINT = struct.Struct("=IHH16s")  # family, port (network order), pad, addr
_PEER_COUNTERS = struct.Struct("=QQ")
_CONFIG = struct.Struct("=IIIIII")
_BUCKET = struct.Struct("=QQ")
RATE_MAX = 1_000_000  # keeps the C's refill arithmetic (10 s x rate x 1e9) inside u64


@dataclass(frozen=True)
class ControlLimits:
    """Token buckets for control packets from addresses that are not a connected peer's.

    A handshake from an openvpn 2.6 client sends about 10 control packets in 10-20 ms (and
    the server about 6), so the per-source (address:port) burst holds several handshakes
    and the rate one a second. The global rate is above what the Python control plane can
    handshake anyway (about 200 a second); first contacts, a handshake's first packet,
    also pay from an eighth of it, so a spoofed flood (all first contacts) gets no more
    than that up to the control plane, and clients seen before keep the rest.
    """

    source_rate: int = 16
    source_burst: int = 64
    global_rate: int = 2000
    global_burst: int = 4000

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if not 0 < value <= RATE_MAX:
                raise ValueError(f"{name.replace('_', ' ')} must be 1..{RATE_MAX}, not {value}")


DEFAULT_CONTROL_LIMITS = ControlLimits()
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


@cache
def possible_cpus() -> int:
    """Per-CPU map values come one per *possible* CPU, not online."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    return max(int(part.split("-")[-1]) for part in text.split(",")) + 1


class RawMap:
    """One BPF map by fd: bytes in, bytes out."""

    def __init__(self, fd: int, key_size: int, value_size: int, percpu: bool = False) -> None:
        self.fd, self.key_size, self.value_size, self.percpu = fd, key_size, value_size, percpu
        # Per-CPU values are each rounded up to 8 bytes.
        self._slot = (value_size + 7) // 8 * 8 if percpu else value_size
        self._total = self._slot * possible_cpus() if percpu else value_size

    def _op(self, cmd: int, key: bytes, value: ctypes.Array | None, flags: int = 0) -> None:
        kbuf = ctypes.create_string_buffer(key, self.key_size)
        vptr = ctypes.addressof(value) if value is not None else 0
        syscall.bpf(cmd, syscall.attr("=IIQQQ", self.fd, 0, ctypes.addressof(kbuf), vptr, flags))

    def lookup(self, key: bytes) -> list[bytes] | None:
        """The value (one entry per CPU for per-CPU maps), or None if absent."""
        buf = ctypes.create_string_buffer(self._total)
        try:
            self._op(MAP_LOOKUP_ELEM, key, buf)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise MapError(f"map lookup failed: {exc.strerror}") from exc
        raw = buf.raw
        return [raw[i : i + self.value_size] for i in range(0, self._total, self._slot)]

    def update(self, key: bytes, value: bytes) -> None:
        buf = ctypes.create_string_buffer(value * (self._total // self._slot), self._total)
        try:
            self._op(MAP_UPDATE_ELEM, key, buf, BPF_ANY)
        except OSError as exc:
            raise MapError(f"map update failed: {exc.strerror}") from exc

    def delete(self, key: bytes) -> bool:
        try:
            self._op(MAP_DELETE_ELEM, key, None)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise MapError(f"map delete failed: {exc.strerror}") from exc
        return True

    def walk(self) -> Iterator[bytes]:
        """Keys of a hash map (a snapshot walk; entries may change meanwhile)."""
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        first = True
        while True:
            prev = 0 if first else ctypes.addressof(key)
            try:
                syscall.bpf(
                    MAP_GET_NEXT_KEY, syscall.attr("=IIQQ", self.fd, 0, prev, ctypes.addressof(nxt))
                )
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    return
                raise MapError(f"map walk failed: {exc.strerror}") from exc
            first = False
            ctypes.memmove(key, nxt, self.key_size)
            yield nxt.raw

    def counter_sums(self, n: int) -> list[int]:
        """Per-CPU u64 array of n entries, summed over CPUs."""
        sums = []
        for i in range(n):
            values = self.lookup(_U32.pack(i)) or []
            sums.append(sum(_U64.unpack(v)[0] for v in values))
        return sums


@dataclass(frozen=True)
class PeerCounters:
    packets: int
    bytes: int


def endpoint_key(addr: str, port: int) -> bytes:
    """A listener or a peer's remote as the classifier sees it (IPv4-mapped as IPv4)."""
    ip = ipaddress.ip_address(addr.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    family = 4 if ip.version == 4 else 6
    return _ENDPOINT.pack(family, _port_key(port), 0, ip.packed.ljust(16, b"\0"))


def _port_key(port: int) -> int:
    """The port as the u16 the C struct holds: network byte order, read natively."""
    if not 0 < port < 65536:
        raise MapError(f"bad port {port}")
    return struct.unpack("=H", struct.pack("!H", port))[0]


class ClassifierMaps:
    """The classifier's maps, by name, with typed verbs."""

    def __init__(self, fds: dict[str, int], owned: bool = False) -> None:
        self.fds = fds
        self._owned = owned
        self.listeners = RawMap(fds["listeners"], _ENDPOINT.size, 1)
        self.peers = RawMap(fds["peers"], 4, 1)
        self.remotes = RawMap(fds["remotes"], _ENDPOINT.size, 1)
        self.authority = RawMap(fds["authority"], 4, 4)
        self.global_bucket = RawMap(fds["global_bucket"], 4, _BUCKET.size)
        self.peer_stats = RawMap(fds["peer_stats"], 4, _PEER_COUNTERS.size, percpu=True)
        self.opcode_stats = RawMap(fds["opcode_stats"], 4, 8, percpu=True)
        self.verdict_stats = RawMap(fds["verdict_stats"], 4, 8, percpu=True)
        self.config = RawMap(fds["config"], 4, _CONFIG.size)
        self.xsks = RawMap(fds["xsks"], 4, 4)

    @classmethod
    def open_pinned(cls, pin_dir: Path) -> ClassifierMaps:
        """Open the maps another process pinned under pin_dir; raises MapError."""
        fds: dict[str, int] = {}
        try:
            for name in MAP_NAMES:
                fds[name] = syscall.obj_get(str(pin_dir / name))
        except OSError as exc:
            for fd in fds.values():
                os.close(fd)
            raise MapError(f"no pinned classifier maps at {pin_dir}: {exc.strerror}") from exc
        return cls(fds, owned=True)

    def close(self) -> None:
        if self._owned:
            for fd in self.fds.values():
                os.close(fd)
            self._owned = False

    # -- listeners and peers --------------------------------------------------
    def add_listener(self, addr: str, port: int) -> None:
        """Classify UDP to addr:port (0.0.0.0 or :: for any address of the family)."""
        self.listeners.update(endpoint_key(addr, port), b"\1")

    def remove_listener(self, addr: str, port: int) -> bool:
        return self.listeners.delete(endpoint_key(addr, port))

    def set_peer(self, peer_id: int, key_ids: Iterable[int]) -> None:
        """Steer this peer's DATA_V2 for these key-ids (the ones the data plane holds)."""
        mask = 0
        for kid in key_ids:
            if not 0 <= kid < KEY_ID_COUNT:
                raise MapError(f"bad key-id {kid}")
            mask |= 1 << kid
        self.peers.update(_U32.pack(peer_id), bytes([mask]))

    def del_peer(self, peer_id: int) -> None:
        self.peers.delete(_U32.pack(peer_id))
        self.peer_stats.delete(_U32.pack(peer_id))

    def add_remote(self, addr: str, port: int) -> None:
        """A connected peer's address: its control packets are never rate-limited."""
        self.remotes.update(endpoint_key(addr, port), b"\1")

    def remove_remote(self, addr: str, port: int) -> bool:
        return self.remotes.delete(endpoint_key(addr, port))

    def set_authoritative(self, on: bool) -> None:
        """Say whether `peers` is all the data plane serves: then DATA_V2 for any other
        peer-id, and DATA_V1, are dropped instead of passed up to the socket."""
        self.authority.update(_U32.pack(0), _U32.pack(int(on)))

    @property
    def authoritative(self) -> bool:
        values = self.authority.lookup(_U32.pack(0))
        return bool(values and _U32.unpack(values[0])[0])

    def forget_data_plane(self) -> None:
        """Back to passing everything up: not authoritative, no peers, no remotes."""
        self.set_authoritative(False)
        for table in (self.peers, self.remotes):
            for key in list(table.walk()):
                table.delete(key)

    def bind_queue(self, queue: int, xsk_fd: int) -> None:
        """Make RX queue `queue` redirect to this AF_XDP socket (bound to that queue)."""
        self.xsks.update(_U32.pack(queue), _U32.pack(xsk_fd))

    def unbind_queue(self, queue: int) -> None:
        self.xsks.delete(_U32.pack(queue))

    # -- configuration --------------------------------------------------------
    def _config(self) -> list[int]:
        values = self.config.lookup(_U32.pack(0))
        return list(_CONFIG.unpack(values[0])) if values else [0] * 6

    def set_observe(self, on: bool) -> None:
        cfg = self._config()
        cfg[0] = cfg[0] | CFG_OBSERVE if on else cfg[0] & ~CFG_OBSERVE
        self.config.update(_U32.pack(0), _CONFIG.pack(*cfg))

    def set_control_limits(self, limits: ControlLimits | None) -> None:
        """Token-bucket control packets from non-peers (see ControlLimits); None: off."""
        flags = self._config()[0]
        if limits is None:
            off = _CONFIG.pack(flags & ~CFG_CONTROL_LIMIT, 0, 0, 0, 0, 0)
            self.config.update(_U32.pack(0), off)
            return
        self.config.update(_U32.pack(0), _CONFIG.pack(
            flags | CFG_CONTROL_LIMIT, limits.source_rate, limits.source_burst,
            limits.global_rate, limits.global_burst, 0))  # fmt: skip
        # Whatever the old settings left in the shared buckets: start full.
        for index in range(2):  # all non-peers, first contacts
            self.global_bucket.update(_U32.pack(index), _BUCKET.pack(0, 0))

    @property
    def control_limits(self) -> ControlLimits | None:
        flags, *rates, _ = self._config()
        return ControlLimits(*rates) if flags & CFG_CONTROL_LIMIT else None

    @property
    def observe(self) -> bool:
        return bool(self._config()[0] & CFG_OBSERVE)

    # -- counters -------------------------------------------------------------
    def opcode_counts(self) -> dict[int, int]:
        """Packets to a listener per opcode value (0-31); names via proto Opcode."""
        return dict(enumerate(self.opcode_stats.counter_sums(32)))

    def verdict_counts(self) -> dict[Verdict, int]:
        return dict(zip(Verdict, self.verdict_stats.counter_sums(len(Verdict)), strict=True))

    def peer_counts(self) -> dict[int, PeerCounters]:
        out = {}
        for key in self.peer_stats.walk():
            values = self.peer_stats.lookup(key) or []
            pairs = [_PEER_COUNTERS.unpack(v) for v in values]
            out[_U32.unpack(key)[0]] = PeerCounters(
                sum(p[0] for p in pairs), sum(p[1] for p in pairs)
            )
        return out


def opcode_name(value: int) -> str:
    try:
        return Opcode(value).name
    except ValueError:
        return f"opcode {value}"
