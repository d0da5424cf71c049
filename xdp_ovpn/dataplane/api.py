"""The DCO-like control/data-plane API: the verbs and notifications both data paths speak.

Mirrors Linux `ovpn` / ovpn-dco netlink (PEER_NEW/SET/DEL/GET, KEY_NEW/SWAP/DEL,
PEER_DEL_NTF, PEER_FLOAT_NTF, KEY_SWAP_NTF) so the control plane drives a data plane
exactly as openvpn drives the kernel.

Socket ownership (one UDP socket, one port, as openvpn): the control plane opens and
binds the UDP socket and hands it to the data plane, which sends data packets on it.
On both paths the data-plane worker reads the socket (on the XDP path it sees what the
classifier passes: control packets, and DATA_V2 not steered to AF_XDP), keeps DATA_V2 and
passes every other datagram up: `control_fd()` is readable when `read_control()` has
datagrams. The control plane sends its control packets with `sendto` on its own copy of
the socket: sending from two processes on one UDP socket is safe.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Address = tuple[str, int]


class DataPlaneError(Exception):
    """A data-plane verb failed (unknown peer, bad key, worker gone): a short reason."""


class KeySlot(enum.IntEnum):
    """Key slots of a peer, as in ovpn-dco: new keys go to SECONDARY, then swap."""

    PRIMARY = 0
    SECONDARY = 1


# Drop reasons (PeerStats.drops) the control plane acts on. BAD_SOURCE: on a server, a
# decrypted packet whose inner source is not its peer's VPN address or inside one of its
# iroutes, or that is not IP or too short for its IP header; logged (rate-limited) and
# reported. LINK_LOCAL_SOURCE: an IPv6 link-local source (fe80::/10), no peer's either,
# but clients' kernels send from one on their own (router solicitations, MLD): dropped as
# openvpn does, apart, so that BAD_SOURCE counts only what deserves a look.
BAD_SOURCE = "bad source address"
LINK_LOCAL_SOURCE = "IPv6 link-local source"


@dataclass
class PeerStats:
    """Counters of one peer (`get_peer`)."""

    peer_id: int
    remote: Address
    vpn_ipv4: str | None = None
    vpn_ipv6: str | None = None
    rx_packets: int = 0  # tunnel side: decrypted packets written to the TUN
    rx_bytes: int = 0
    tx_packets: int = 0  # tunnel side: packets read from the TUN and encrypted
    tx_bytes: int = 0
    link_rx_packets: int = 0  # link side: DATA datagrams received for this peer
    link_rx_bytes: int = 0
    link_tx_packets: int = 0
    link_tx_bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)  # reason -> count
    # The source of the last packet dropped as BAD_SOURCE (peers.py): 4 or 16 packed bytes,
    # b"" when that packet was not IP or too short for its IP header; None: no such drop.
    last_bad_source: bytes | None = None
    last_rx: float | None = None  # monotonic seconds
    last_tx: float | None = None
    primary_key_id: int | None = None
    secondary_key_id: int | None = None
    # Several data-plane workers (one per RX queue): link_rx_packets of each, in order.
    worker_link_rx_packets: tuple[int, ...] = ()


@dataclass(frozen=True)
class PeerExpired:
    """The data plane removed a peer: keepalive timeout, or an OCC exit from the peer."""

    peer_id: int
    reason: str = "expired"


@dataclass(frozen=True)
class PeerFloated:
    """An authenticated DATA packet came from a new address; the peer's remote now is it."""

    peer_id: int
    new_remote: Address


@dataclass(frozen=True)
class KeyNeedsRenewal:
    """A key's packet-id neared exhaustion; the control plane should renegotiate."""

    peer_id: int
    key_id: int


Notification = PeerExpired | PeerFloated | KeyNeedsRenewal


# Runs a call, and waits for it, where the capabilities to set a worker up are still held.
Privileged = Callable[[Callable[[], None]], None]


class DataPlane(Protocol):
    """What the control plane needs from a data path (socket or XDP)."""

    name: str  # "socket" or "xdp", for the log
    engine: str  # the per-packet engine its worker runs: "native" or "python" (engine.py)
    # True when the data path writes GSO super-packets: the TUN must be opened IFF_VNET_HDR.
    tun_vnet_hdr: bool
    # Its engine can do 2.7's epoch data format (new_key with epoch=True): only then may
    # the sessions offer it (SessionConfig.epoch_data).
    epoch_format: bool
    # Capabilities (capabilities.py) the thread that starts a replacement worker has to
    # keep when the process gives up root.
    restart_capabilities: frozenset[int]

    def new_peer(
        self,
        peer_id: int,
        remote: Address,
        vpn_ipv4: str | None = None,
        vpn_ipv6: str | None = None,
        iroutes: Sequence[str] = (),
    ) -> None: ...

    def set_peer(
        self,
        peer_id: int,
        *,
        remote: Address | None = None,
        keepalive_interval: float | None = None,
        keepalive_timeout: float | None = None,
        vpn_ipv4: str | None = None,
        vpn_ipv6: str | None = None,
        iroutes: Sequence[str] | None = None,
    ) -> None: ...

    def del_peer(self, peer_id: int, reason: str = "userspace") -> None: ...

    def new_key(
        self,
        peer_id: int,
        slot: KeySlot,
        key_id: int,
        cipher: str,
        encrypt_key: bytes,
        encrypt_nonce_tail: bytes,
        decrypt_key: bytes,
        decrypt_nonce_tail: bytes,
        epoch: bool = False,
    ) -> None:
        """Install a key; with `epoch` in the epoch data format, the keys then being the
        first epoch secrets and the nonce tails empty (events.KeysReady)."""
        ...

    def swap_keys(self, peer_id: int) -> None: ...

    def del_key(self, peer_id: int, slot: KeySlot) -> None: ...

    def get_peer(self, peer_id: int) -> PeerStats: ...

    def peers(self) -> list[int]:
        """Peer-ids the data plane currently holds."""
        ...

    def drops(self) -> dict[str, int]:
        """Drops no peer can be blamed for (socket, AF_XDP rings), by reason."""
        ...

    def send_exit(self, peer_id: int) -> None:
        """Send an OCC exit on the data channel (for peers without control-channel EXIT)."""
        ...

    def attach_tun(self, tun_fd: int, mtu: int) -> None:
        """Give the data plane the (configured) TUN device to read and write."""
        ...

    def drop_privileges(self, uid: int, gid: int, privileged: Privileged) -> None:
        """The worker becomes uid/gid, keeping only what its loop needs; a replacement
        worker is started through `privileged`, which runs a call in the thread that
        kept restart_capabilities."""
        ...

    def notifications(self) -> list[Notification]: ...

    def notification_fd(self) -> int: ...

    def control_fd(self) -> int:
        """Readable when control datagrams wait in read_control()."""
        ...

    def read_control(self) -> list[tuple[bytes, Address]]: ...

    def close(self) -> None: ...

    # -- health, for status and metrics -----------------------------------------------------

    @property
    def pid(self) -> int:
        """The current worker's pid (0: none running)."""
        ...

    # Workers replaced after dying; RX queues the current worker holds an AF_XDP socket
    # on, and "IF queue N: why" of those it could not bind (both 0/empty on the socket path).
    restarts: int
    af_xdp_queues: int
    unbound: list[str]

    @property
    def interfaces(self) -> list[str]:
        """Interfaces the XDP classifier is attached to; none on the socket path."""
        ...

    def maps(self, ifname: str) -> Any:
        """The classifier maps on one of `interfaces` (loader.maps.ClassifierMaps): its
        verdict counters and peers; DataPlaneError for any other name."""
        ...
