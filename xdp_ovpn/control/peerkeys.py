"""One peer's presence in the data plane: KeysReady / KeyRetired turned into DCO verbs.

As openvpn does with DCO: the first key makes the peer (new_peer + keepalive) and goes to
the primary slot; a renegotiated key goes to the secondary slot and is swapped in at once,
so the old key stays for decryption as the lame duck until KeyRetired deletes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from xdp_ovpn.dataplane.api import Address, DataPlane, DataPlaneError, KeySlot
from xdp_ovpn.proto.events import KeyRetired, KeysReady


class PeerKeys:
    """Installs one session's keys for one peer-id."""

    def __init__(self, dataplane: DataPlane, remote: Address) -> None:
        self.dataplane = dataplane
        self.remote = remote
        self.peer_id: int | None = None
        self.vpn_ipv4: str | None = None
        self.vpn_ipv6: str | None = None
        self.iroutes: Sequence[str] = ()
        self.keepalive: tuple[float, float] | None = None
        self._slots: dict[KeySlot, int] = {}
        self.gone = False  # the data plane removed the peer itself (expiry, OCC exit)

    @property
    def installed(self) -> bool:
        return self.peer_id is not None and not self.gone

    def keys_ready(self, event: KeysReady) -> None:
        dp = self.dataplane
        args = (event.cipher, event.encrypt_key, event.encrypt_nonce_tail,
                event.decrypt_key, event.decrypt_nonce_tail)
        if not self.installed:
            self.peer_id, self.gone = event.peer_id, False
            dp.new_peer(event.peer_id, self.remote, self.vpn_ipv4, self.vpn_ipv6, self.iroutes)
            self._apply_keepalive()
            dp.new_key(event.peer_id, KeySlot.PRIMARY, event.key_id, *args)
            self._slots = {KeySlot.PRIMARY: event.key_id}
            return
        dp.new_key(self.peer_id, KeySlot.SECONDARY, event.key_id, *args)
        dp.swap_keys(self.peer_id)
        old = self._slots.get(KeySlot.PRIMARY)
        self._slots = {KeySlot.PRIMARY: event.key_id}
        if old is not None:
            self._slots[KeySlot.SECONDARY] = old

    def key_retired(self, event: KeyRetired) -> None:
        if not self.installed:
            return
        for slot, key_id in list(self._slots.items()):
            if key_id == event.key_id:
                del self._slots[slot]
                self.dataplane.del_key(self.peer_id, slot)

    def set_keepalive(self, interval: float, timeout: float) -> None:
        self.keepalive = (interval, timeout)
        if self.installed:
            self._apply_keepalive()

    def _apply_keepalive(self) -> None:
        if self.keepalive:
            interval, timeout = self.keepalive
            self.dataplane.set_peer(self.peer_id, keepalive_interval=interval,
                                    keepalive_timeout=timeout)

    def floated(self, remote: Address) -> None:
        self.remote = remote

    def remove(self) -> None:
        """Delete the peer from the data plane (if it still holds it)."""
        if self.installed:
            with contextlib.suppress(DataPlaneError):
                self.dataplane.del_peer(self.peer_id)
        self.gone = True
