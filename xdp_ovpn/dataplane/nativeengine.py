"""The native engine: engine.py's contract over the C extension `xdp_ovpn._native`.

The per-packet loops run in C (native/: io.c, offload.c, pktid.c, crypto_aead.c, peer.c);
this module only translates what is not per packet: addresses and iroutes are parsed here
and handed down packed, the C events come back as tuples and leave as engine.py's event
dataclasses, counters as api.PeerStats. The Python engine (pyengine.py) is the reference:
tests/native holds the two to the same bytes, events, counters and drop reasons.

What the C side reports is applied here before anything reads it: an OCC exit has already
removed the peer there, so it is removed from the records as well; a float updates the
record's remote.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from xdp_ovpn import _native
from xdp_ovpn.dataplane.api import (
    Address,
    DataPlaneError,
    KeyNeedsRenewal,
    PeerExpired,
    PeerFloated,
    PeerStats,
)
from xdp_ovpn.dataplane.engine import (
    BATCH,
    RX_BATCH,
    RX_ROUNDS,
    ControlDatagram,
    EngineConfig,
    EngineEvent,
)
from xdp_ovpn.dataplane.offload import TUNSETOFFLOAD
from xdp_ovpn.proto.constants import AEAD_CIPHERS, MAX_PEER_ID

_CIPHERS = {
    "AES-128-GCM": _native.AES_128_GCM,
    "AES-192-GCM": _native.AES_192_GCM,
    "AES-256-GCM": _native.AES_256_GCM,
    "CHACHA20-POLY1305": _native.CHACHA20_POLY1305,
}
assert set(_CIPHERS) == set(AEAD_CIPHERS)
# linux/if_tun.h: TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN
_TUN_OFFLOADS = 0x01 | 0x02 | 0x04 | 0x08


@dataclass
class _Record:
    """What the Python side keeps of a peer: the strings PeerStats reports."""

    remote: Address
    vpn_ipv4: str | None
    vpn_ipv6: str | None


def _packed_remote(remote: Address) -> tuple[int, bytes, int, bool]:
    """(4 or 6, packed address, port, canonical) of a remote; family 0 when it is not an
    address. Canonical: the string is what recvfrom would return for it, so the socket path
    (which compares the strings) sees no float."""
    host, port = remote[0], int(remote[1])
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return 0, b"", port, False
    family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
    return ip.version, ip.packed, port, socket.inet_ntop(family, ip.packed) == host


def _packed_routes(peer_id: int, iroutes: Sequence[str]) -> bytes:
    """Each iroute as 18 bytes: family, prefix length, network (16 bytes, zero padded)."""
    out = bytearray()
    for route in iroutes:
        try:
            net = ipaddress.ip_network(route, strict=False)
        except ValueError as exc:
            raise DataPlaneError(f"peer {peer_id}: {exc}") from None
        out += bytes((net.version, net.prefixlen)) + net.network_address.packed.ljust(16, b"\0")
    return bytes(out)


def _packed(peer_id: int, address: str | None) -> bytes | None:
    if not address:
        return None
    try:
        return ipaddress.ip_address(address).packed
    except ValueError as exc:
        raise DataPlaneError(f"peer {peer_id}: {exc}") from None


def _vpn(peer_id: int, vpn_ipv4: str | None, vpn_ipv6: str | None) -> tuple:
    """The VPN addresses packed, each under its own family (as PeerTable indexes them)."""
    return _packed(peer_id, vpn_ipv4), _packed(peer_id, vpn_ipv6)


class NativeEngine:
    """engine.Engine over the C extension (see the module docstring)."""

    name = "native"
    epoch_format = True  # with a shared slot, whatever the number of workers (epoch.c)

    def __init__(self, sock: socket.socket, config: EngineConfig) -> None:
        self.config = config
        # An IPv6 socket sends to IPv4 peers by their IPv4-mapped address: report those.
        self._mapped_v4 = sock.family == socket.AF_INET6
        self._sock = sock  # the fd stays open as long as the engine uses it
        self._c = _native.Engine(
            sock.fileno(), int(sock.family), config.single_peer, config.replay_window,
            float(config.replay_time), config.mss, config.gso, config.check_source,
            self._mapped_v4, -1 if config.mss_epoch is None else config.mss_epoch,
        )
        self._raw = self._c.events  # the C side appends tuples as things happen
        self._events: list[EngineEvent] = []
        self._records: dict[int, _Record] = {}
        self._xsks: list[object] = []  # kept alive: the C side points into their mappings

    # -- events -----------------------------------------------------------------------

    def _sync(self) -> None:
        """Turn the C side's event tuples into events, applying what they say."""
        raw = self._raw
        if not raw:
            return
        items = raw[:]
        del raw[:]
        for item in items:
            kind = item[0]
            if kind == "control":
                self._events.append(ControlDatagram(item[1], self._address(item[2])))
            elif kind == "float":
                remote = self._address(item[2])
                record = self._records.get(item[1])
                if record is not None:
                    record.remote = remote
                self._events.append(PeerFloated(item[1], remote))
            elif kind == "exit":
                self._records.pop(item[1], None)
                self._events.append(PeerExpired(item[1], "exit"))
            elif kind == "renew":
                self._events.append(KeyNeedsRenewal(item[1], item[2]))

    def _address(self, packed: tuple[int, bytes, int]) -> Address:
        family, address, port = packed
        if family == 6:
            return socket.inet_ntop(socket.AF_INET6, address), port
        text = socket.inet_ntop(socket.AF_INET, address)
        return ("::ffff:" + text if self._mapped_v4 else text), port

    def events(self) -> list[EngineEvent]:
        self._sync()
        events, self._events = self._events, []
        return events

    # -- peers and keys ---------------------------------------------------------------

    def _known(self, peer_id: int) -> _Record:
        self._sync()
        record = self._records.get(peer_id)
        if record is None:
            raise DataPlaneError(f"no peer with peer-id {peer_id}")
        return record

    def add_peer(self, peer_id: int, remote: Address, vpn_ipv4: str | None,
                 vpn_ipv6: str | None, iroutes: Sequence[str], now: float) -> None:
        self._sync()
        if peer_id in self._records:
            raise DataPlaneError(f"peer-id {peer_id} already exists")
        if self.config.single_peer and self._records:
            raise DataPlaneError("this endpoint has a single peer")
        if not 0 <= peer_id <= MAX_PEER_ID:
            raise DataPlaneError(f"peer-id {peer_id} out of range")
        remote = (remote[0], remote[1])
        v4, v6 = _vpn(peer_id, vpn_ipv4, vpn_ipv6)
        routes = _packed_routes(peer_id, iroutes)
        self._c.add_peer(peer_id, _packed_remote(remote), v4, v6, routes, now)
        self._records[peer_id] = _Record(remote, vpn_ipv4, vpn_ipv6)

    def update_peer(self, peer_id: int, *, remote: Address | None = None,
                    vpn_ipv4: str | None = None, vpn_ipv6: str | None = None,
                    iroutes: Sequence[str] | None = None) -> None:
        record = self._known(peer_id)
        remote = (remote[0], remote[1]) if remote is not None else None
        v4, v6 = _vpn(peer_id, vpn_ipv4, vpn_ipv6)
        routes = _packed_routes(peer_id, iroutes) if iroutes is not None else None
        self._c.update_peer(peer_id, _packed_remote(remote) if remote else None, v4, v6, routes)
        if remote is not None:
            record.remote = remote
        if vpn_ipv4:
            record.vpn_ipv4 = vpn_ipv4
        if vpn_ipv6:
            record.vpn_ipv6 = vpn_ipv6

    def remove_peer(self, peer_id: int) -> None:
        self._known(peer_id)
        self._c.remove_peer(peer_id)
        del self._records[peer_id]

    def peer_ids(self) -> list[int]:
        self._sync()
        return self._c.peer_ids()

    def new_key(self, peer_id: int, slot: int, key_id: int, cipher: str,
                encrypt_key: bytes, encrypt_nonce_tail: bytes, decrypt_key: bytes,
                decrypt_nonce_tail: bytes, ledger: memoryview | None = None,
                ledger_index: int = 0, shared: memoryview | None = None,
                epoch: bool = False) -> None:
        self._known(peer_id)
        code = _CIPHERS.get(cipher)
        if code is None:
            raise DataPlaneError(f"unsupported data cipher {cipher!r}")
        try:
            self._c.new_key(peer_id, int(slot), key_id, code, encrypt_key, encrypt_nonce_tail,
                            decrypt_key, decrypt_nonce_tail, ledger, ledger_index, shared,
                            epoch)
        except (ValueError, IndexError, OSError) as exc:
            raise DataPlaneError(f"peer {peer_id}: {exc}") from None

    def swap_keys(self, peer_id: int) -> None:
        self._known(peer_id)
        self._c.swap_keys(peer_id)

    def del_key(self, peer_id: int, slot: int) -> None:
        self._known(peer_id)
        self._c.del_key(peer_id, int(slot))

    def key_ids(self, peer_id: int) -> tuple[int | None, int | None]:
        self._known(peer_id)
        return self._c.key_ids(peer_id)

    # -- I/O --------------------------------------------------------------------------

    def add_xsk(self, xsk: object) -> int:
        """Point the C loop at an AF_XDP socket's RX and fill rings and its UMEM (the
        mappings of xsk.XskSocket; close the engine before the socket)."""
        rx, fill, umem = xsk._rx, xsk._fr, xsk.umem  # type: ignore[attr-defined]
        index = self._c.add_xsk(
            rx.words, rx.q, rx.size, rx.prod, rx.cons, rx.flags,
            fill.words, fill.q, fill.size, fill.prod, fill.cons, fill.flags,
            umem.view, umem.frame_size, xsk.fileno(),  # type: ignore[attr-defined]
        )
        self._xsks.append(xsk)
        return index

    def set_tun(self, fd: int, vnet_hdr: bool) -> None:
        """With a vnet_hdr TUN and GSO sends, reads come as TCP super-packets (TSO) and with
        checksums left to finish (CSUM): the C loop cuts and checksums them, one read for
        up to 64 KB instead of one a packet. Anything else than a TUN keeps plain reads."""
        if vnet_hdr and self.config.gso:
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, TUNSETOFFLOAD, _TUN_OFFLOADS)
        self._c.set_tun(fd, vnet_hdr)

    def serve(self, wake: tuple[int, ...], timeout: float, read_socket: bool,
              read_tun: bool) -> None:
        """native/loop.c: poll and the C loops back to back, no interpreter a wake-up."""
        self._c.serve(wake, timeout, read_socket, read_tun, RX_BATCH, RX_ROUNDS, BATCH)

    def rx_xsk(self, index: int, budget: int, now: float) -> int:
        return self._c.rx_xsk(index, budget, now)

    def rx_socket(self, budget: int, now: float) -> int:
        return self._c.rx_socket(budget, now)

    def tx(self, budget: int, now: float) -> int:
        return self._c.tx(budget, now)

    def send(self, peer_id: int, payload: bytes, now: float) -> bool:
        self._known(peer_id)
        return self._c.send(peer_id, payload, now)

    # -- out --------------------------------------------------------------------------

    def peer_stats(self, peer_id: int) -> PeerStats:
        record = self._known(peer_id)
        (rx, rx_bytes, tx, tx_bytes, link_rx, link_rx_bytes, link_tx, link_tx_bytes, drops,
         send_errors, last_rx, last_tx, primary, secondary, bad_source) = self._c.stats(peer_id)
        for code, count in send_errors.items():
            reason = f"send {errno.errorcode.get(code, code)}"
            drops[reason] = drops.get(reason, 0) + count
        return PeerStats(
            peer_id, record.remote, record.vpn_ipv4, record.vpn_ipv6,
            rx_packets=rx, rx_bytes=rx_bytes, tx_packets=tx, tx_bytes=tx_bytes,
            link_rx_packets=link_rx, link_rx_bytes=link_rx_bytes,
            link_tx_packets=link_tx, link_tx_bytes=link_tx_bytes, drops=drops,
            last_bad_source=bad_source, last_rx=last_rx, last_tx=last_tx, primary_key_id=primary,
            secondary_key_id=secondary,
        )

    def activity(self) -> list[tuple[int, float, float]]:
        self._sync()
        return self._c.activity()

    def drops(self) -> dict[str, int]:
        return self._c.drops()

    def close(self) -> None:
        self._c.close()
        self._xsks.clear()
