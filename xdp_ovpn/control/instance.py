"""One client as the server holds it (openvpn's multi_instance): its session driver, keys,
identity, client-config-dir entry, tunnel addresses and admission state.

Its own module so that the server and admission, which both work on it, need not import
each other.
"""

from __future__ import annotations

import asyncio
import dataclasses

from cryptography import x509

from xdp_ovpn.control import ccd
from xdp_ovpn.control.badsource import BadSourceLog
from xdp_ovpn.control.driver import SessionDriver
from xdp_ovpn.control.peerkeys import PeerKeys
from xdp_ovpn.dataplane.api import PeerStats
from xdp_ovpn.proto.session import Session


@dataclasses.dataclass(eq=False)
class ClientInstance:
    """One connected (or connecting) client."""

    peer_id: int
    driver: SessionDriver
    keys: PeerKeys
    client_id: int = 0  # openvpn's cid (management client-kill, bytecount)
    common_name: str | None = None  # after username-as-common-name
    username: str | None = None
    chain: tuple[x509.Certificate, ...] = ()
    peer_info: dict[str, str] = dataclasses.field(default_factory=dict)
    entry: ccd.ClientConfig = dataclasses.field(default_factory=ccd.ClientConfig)
    vpn_ipv4: str | None = None
    prefix4: int | None = None
    fixed4: bool = False  # ifconfig-push, not from the pool
    vpn_ipv6: str | None = None
    prefix6: int | None = None
    fixed6: bool = False
    connected_since: float | None = None  # unix time
    cipher: str = ""
    admitted: bool = False  # client-connect accepted it: client-disconnect runs at the end
    routes: list[str] = dataclasses.field(default_factory=list)  # kernel routes for iroutes
    last_stats: PeerStats | None = None  # the data plane's counters when last read
    bad_sources: BadSourceLog = dataclasses.field(default_factory=BadSourceLog)
    task: asyncio.Task | None = None  # the admission in progress

    @property
    def session(self) -> Session:
        return self.driver.session
