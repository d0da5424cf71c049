"""One end of a socket data path for tests: run inside a lab namespace.

usage: socketpath_peer.py LOCAL_IP REMOTE_IP TUN_CIDR SIDE(0|1) [KEEPALIVE_TIMEOUT]

Both ends use fixed keys (side 1 swaps the directions), print "ready", then print each
notification as a line until stdin closes; finally the peer's stats as JSON.
"""

from __future__ import annotations

import json
import select
import socket
import sys

from xdp_ovpn.dataplane.api import KeySlot
from xdp_ovpn.dataplane.socketpath import SocketDataPlane
from xdp_ovpn.dataplane.tun import Tun

PORT = 1194
KEYS = (bytes(range(32)), bytes(range(100, 132)))
TAILS = (b"\x01" * 8, b"\x02" * 8)


def main() -> None:
    local, remote, cidr, side = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 else 0
    sock = socket.socket(socket.AF_INET6 if ":" in local else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((local, PORT))
    dp = SocketDataPlane(sock, single_peer=True)
    tun = Tun(mtu=1400)
    tun.add_address(cidr)
    tun.up()
    dp.attach_tun(tun.fileno(), 1400)
    dp.new_peer(7, (remote, PORT))
    enc, dec = (0, 1) if side == 0 else (1, 0)
    dp.new_key(7, KeySlot.PRIMARY, 0, "AES-256-GCM", KEYS[enc], TAILS[enc], KEYS[dec], TAILS[dec])
    if timeout:
        dp.set_peer(7, keepalive_interval=timeout / 3, keepalive_timeout=timeout)
    print("ready", flush=True)
    stats = None
    while True:
        ready, _, _ = select.select([sys.stdin, dp.notification_fd()], [], [])
        if dp.notification_fd() in ready:
            for event in dp.notifications():
                print(type(event).__name__, event.peer_id, flush=True)
        if sys.stdin in ready and not sys.stdin.readline():
            break
    if 7 in dp.peers():
        stats = dp.get_peer(7)
    print(json.dumps(stats.__dict__ if stats else None, default=str), flush=True)
    dp.close()
    tun.close()


if __name__ == "__main__":
    main()
