"""How many RX queues an interface really uses: the queues an AF_XDP socket can bind.

Netlink's IFLA_NUM_RX_QUEUES is the number *allocated*, not the number in use: a plain
`ip link add ... type veth` on a 2-CPU machine allocates 2 and uses 1, and a NIC whose
channels were cut with `ethtool -L` looks the same. AF_XDP refuses a bind beyond the
count in use (EINVAL), so that is the count to take, from where the kernel tells it:

1. ethtool's channels (SIOCETHTOOL, ETHTOOL_GCHANNELS): RX-only plus combined channels;
2. else the sysfs queue directories (`/sys/class/net/IF/queues/rx-N`), when that sysfs
   shows this network namespace (its ifindex matches);
3. else the allocated count, or 1: a queue beyond the real count then fails to bind, and
   the data path leaves it to the UDP socket and says so.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

SIOCETHTOOL = 0x8946
ETHTOOL_GCHANNELS = 0x3C
# struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined,
# rx_count, tx_count, other_count, combined_count (all u32)
_CHANNELS = struct.Struct("9I")
_IFNAMSIZ = 16
_SYSFS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class RxQueues:
    """An interface's RX queues: in use (bindable), allocated, and where the count came from."""

    in_use: int
    allocated: int | None
    source: str  # "ethtool", "sysfs" or "allocated"

    def describe(self) -> str:
        """`1 RX queue`, or `1 RX queue in use of 2 allocated` when the two differ."""
        text = f"{self.in_use} RX queue{'' if self.in_use == 1 else 's'}"
        if self.allocated and self.allocated != self.in_use:
            text += f" in use of {self.allocated} allocated"
        return text


def _ethtool_channels(ifname: str) -> int | None:
    request = array.array("B", _CHANNELS.pack(ETHTOOL_GCHANNELS, *[0] * 8))
    address, _ = request.buffer_info()
    ifreq = struct.pack(f"{_IFNAMSIZ}sP", ifname.encode()[: _IFNAMSIZ - 1], address)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    except OSError:  # EOPNOTSUPP: the driver has no channels (bridge, vlan, dummy, ...)
        return None
    fields = _CHANNELS.unpack(request.tobytes())
    rx_only, combined = fields[5], fields[8]
    return rx_only + combined or None


def _sysfs_queues(ifname: str) -> int | None:
    base = _SYSFS_NET / ifname
    try:
        # sysfs shows the namespace of whoever mounted it: trust it only if it is ours.
        if int((base / "ifindex").read_text()) != socket.if_nametoindex(ifname):
            return None
        count = sum(1 for q in (base / "queues").iterdir() if q.name.startswith("rx-"))
    except (OSError, ValueError):  # no such directory (some virtual devices), other netns
        return None
    return count or None


def rx_queues(ifname: str, allocated: int | None = None) -> RxQueues:
    """The RX queues of ifname in this network namespace; `allocated` from netlink if known."""
    for source, probe in (("ethtool", _ethtool_channels), ("sysfs", _sysfs_queues)):
        count = probe(ifname)
        if count:
            return RxQueues(count, allocated, source)
    return RxQueues(allocated or 1, allocated, "allocated")
