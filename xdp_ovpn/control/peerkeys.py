"""One peer's presence in the data plane: KeysReady / KeyRetired turned into DCO verbs.

As openvpn does with DCO: the first key makes the peer (new_peer + keepalive) and goes to
the primary slot; a renegotiated key goes to the secondary slot and is swapped in at once,
so the old key stays for decryption as the lame duck until KeyRetired deletes it.

reneg-bytes / reneg-pkts count what a key carried; the data plane counts per peer, not
per key, so `take_traffic` hands out the growth of the peer's link counters since the
last call, and a key swap starts the new key from the counters of that moment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from xdp_ovpn.dataplane.api import Address, DataPlane, DataPlaneError, KeySlot
from xdp_ovpn.proto.events import KeyRetired, KeysReady

# How often reneg-bytes/-pkts read the data plane's counters (openvpn checks per packet).
RENEG_POLL_SECONDS = 1.0


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
        self._counted = (0, 0)  # link (bytes, packets), both ways, already handed out
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
            dp.new_key(event.peer_id, KeySlot.PRIMARY, event.key_id, *args, epoch=event.epoch)
            self._slots = {KeySlot.PRIMARY: event.key_id}
            self._counted = (0, 0)  # a new peer's counters start at zero
            return
        self._counted = self._link_totals() or self._counted  # the old key's, not the new
        dp.new_key(self.peer_id, KeySlot.SECONDARY, event.key_id, *args, epoch=event.epoch)
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

    def take_traffic(self) -> tuple[int, int]:
        """Data-channel (bytes, packets), received and sent, since the last call or the
        last key swap: what openvpn counts on its primary key for reneg-bytes/-pkts."""
        totals = self._link_totals() if self.installed else None
        if totals is None:
            return 0, 0
        (n_bytes, n_packets), (old_bytes, old_packets) = totals, self._counted
        self._counted = totals
        return n_bytes - old_bytes, n_packets - old_packets

    def _link_totals(self) -> tuple[int, int] | None:
        try:
            stats = self.dataplane.get_peer(self.peer_id)
        except DataPlaneError:
            return None
        return (stats.link_rx_bytes + stats.link_tx_bytes,
                stats.link_rx_packets + stats.link_tx_packets)

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
