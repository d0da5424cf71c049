"""A hostile mix at an OpenVPN port from spoofed IPv4 sources, for tests and `bench --flood`.

    python -m xdp_ovpn.lab.flood --interface veth0 --mac 02:..:01 --to 10.1.0.1:1194 \\
        --pps 2000 --seconds 5 [--sources 10.99.0.0/16]

Run inside a namespace whose `interface` faces the target: whole Ethernet frames go out of
an AF_PACKET socket, each from a random address of `sources` and a random port, so no reply
can reach the sender. The mix is what issue reports of floods name: garbage, truncated
packets, HARD_RESET_CLIENT_V2/V3 with random session ids, CONTROL_V1/ACK_V1 of sessions
that do not exist, DATA_V1, and DATA_V2 with random peer-ids (never below MIN_PEER_ID, so
small real peer-ids are never hit). It stops after `seconds` (or on SIGTERM/SIGINT) and
prints what it sent, per kind, as JSON.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable

from xdp_ovpn.dataplane.offload import fold
from xdp_ovpn.proto.constants import OPCODE_SHIFT, SESSION_ID_LEN, Opcode

MIN_PEER_ID = 1 << 12  # lab peer-ids are small: a random one never names a real peer
TICK = 0.01  # seconds between batches
ETH_P_IP = 0x0800
SRC_MAC = bytes.fromhex("020000f10001")


def _head(rng: random.Random, op: Opcode) -> bytes:
    return bytes([op << OPCODE_SHIFT | rng.randrange(8)])


def _control(rng: random.Random, op: Opcode, low: int, high: int) -> bytes:
    """An opcode, a random session id and random bytes where wrapping and TLS would be."""
    return _head(rng, op) + rng.randbytes(SESSION_ID_LEN + rng.randrange(low, high))


KINDS: dict[str, Callable[[random.Random], bytes]] = {
    "garbage": lambda rng: rng.randbytes(rng.randrange(1, 200)),
    "truncated": lambda rng: _head(rng, rng.choice(list(Opcode)))
    + rng.randbytes(rng.randrange(0, SESSION_ID_LEN)),
    "hard_reset_v2": lambda rng: _control(rng, Opcode.HARD_RESET_CLIENT_V2, 6, 60),
    "hard_reset_v3": lambda rng: _control(rng, Opcode.HARD_RESET_CLIENT_V3, 200, 400),
    "control": lambda rng: _control(rng, Opcode.CONTROL_V1, 30, 1200),
    "ack": lambda rng: _control(rng, Opcode.ACK_V1, 6, 60),
    "data_v1": lambda rng: _head(rng, Opcode.DATA_V1) + rng.randbytes(rng.randrange(20, 1400)),
    "data_v2": lambda rng: _head(rng, Opcode.DATA_V2)
    + rng.randrange(MIN_PEER_ID, 1 << 24).to_bytes(3, "big")
    + rng.randbytes(rng.randrange(20, 1400)),
}


def _ip_checksum(header: bytes) -> int:
    return ~fold(sum(struct.unpack(f"!{len(header) // 2}H", header))) & 0xFFFF


def ipv4_frame(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes,
               dst_mac: bytes) -> bytes:
    """Ethernet, IPv4 and UDP (checksum 0: none, allowed over IPv4) around payload."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                     src, dst)
    ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
    return dst_mac + SRC_MAC + struct.pack("!H", ETH_P_IP) + ip + udp


def flood(interface: str, dst_mac: bytes, to: tuple[str, int], pps: int, seconds: float,
          sources: ipaddress.IPv4Network, seed: int = 0,
          stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """Send the mix at `pps` for `seconds` or until stop(); the count sent of each kind."""
    rng = random.Random(seed)
    dst = ipaddress.IPv4Address(to[0]).packed
    first, size = int(sources.network_address), sources.num_addresses
    kinds = list(KINDS)
    sent = dict.fromkeys(kinds, 0)
    per_tick = max(1, round(pps * TICK))
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
        sock.bind((interface, 0))
        start = time.monotonic()
        ticks = 0
        while time.monotonic() - start < seconds and not stop():
            for _ in range(per_tick):
                kind = rng.choice(kinds)
                src = (first + rng.randrange(size)).to_bytes(4, "big")
                frame = ipv4_frame(src, dst, rng.randrange(1024, 65536), to[1],
                                   KINDS[kind](rng), dst_mac)
                try:
                    sock.send(frame)
                except OSError:  # e.g. ENOBUFS: the flood only gets thinner
                    continue
                sent[kind] += 1
            ticks += 1
            time.sleep(max(0.0, start + ticks * TICK - time.monotonic()))
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interface", required=True)
    parser.add_argument("--mac", required=True, help="the target interface's MAC address")
    parser.add_argument("--to", required=True, metavar="ADDR:PORT")
    parser.add_argument("--pps", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--sources", default="10.99.0.0/16", type=ipaddress.IPv4Network)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    mac = bytes.fromhex(args.mac.replace(":", ""))
    stopped: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _frame: stopped.append(signum))
    sent = flood(args.interface, mac, (host, int(port)), args.pps, args.seconds, args.sources,
                 args.seed, stop=lambda: bool(stopped))
    json.dump(sent, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
