"""Simulated clients for the scale figures: handshakes per second and memory per peer.

Real servers (openvpn, or xdp-ovpn on either data path) face N clients that connect
at once. Each client is one protocol-core `Session` on its own UDP socket, driven by
one small event loop in a child process inside the client namespace, so its CPU is
not the bench's and its packets really cross the veth. The child prints one JSON
line when every client has its data keys (or the time is up), then holds the
sessions open until its stdin closes, while the server's memory is read.

Child side: `python -m xdp_ovpn.bench.peers MATERIAL.json SERVER PORT COUNT CONCURRENCY TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path

from xdp_ovpn.lab.netns import Namespace
from xdp_ovpn.lab.openvpn import TunnelSpec
from xdp_ovpn.proto.errors import ProtocolError
from xdp_ovpn.proto.events import HandshakeFailed, KeysReady, SessionClosed
from xdp_ovpn.proto.session import Session, SessionConfig, SessionRole
from xdp_ovpn.proto.tls import TLSConfig

# Both servers must accept one certificate many times over and answer every reset.
SERVER_EXTRA = {
    "openvpn": ("duplicate-cn", "max-clients 4096", "connect-freq-initial 1000000 1",
                "disable-dco"),  # the userspace server, as in the throughput baseline
    "xdp-ovpn": ("duplicate-cn", "max-clients 4096"),
}
SCALE_NETWORK = "10.8.0.0/20"  # room for 4000 pool addresses


def write_material(spec: TunnelSpec, path: Path, cn: str = "bench-client") -> None:
    """What a simulated client needs from the spec, for the child process."""
    cred = spec.pki.issued.get(cn) or spec.pki.client(cn)
    path.write_text(json.dumps({
        "ca": spec.pki.ca_pem.decode(),
        "cert": cred.cert_pem.decode(),
        "key": cred.key_pem.decode(),
        "ciphers": spec.cipher.split(":"),
    }))
    path.chmod(0o600)


def _client_config(material: dict) -> SessionConfig:
    tls = TLSConfig(
        ca_pem=material["ca"].encode(),
        cert_pem=material["cert"].encode(),
        key_pem=material["key"].encode(),
        remote_cert_tls="server",
    )
    return SessionConfig(role=SessionRole.CLIENT, tls=tls, data_ciphers=tuple(material["ciphers"]))


class _Client:
    def __init__(self, config: SessionConfig, server: tuple[str, int], now: float) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(server)
        self.session = Session(config, now)
        self.ready_at: float | None = None
        self.failed = False

    def flush(self, now: float) -> None:
        for datagram in self.session.datagrams_to_send(now):
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                self.sock.send(datagram)

    def drain(self, now: float) -> None:
        while (event := self.session.next_event()) is not None:
            if isinstance(event, KeysReady) and self.ready_at is None:
                self.ready_at = now
            elif isinstance(event, HandshakeFailed | SessionClosed):
                self.failed = True

    @property
    def pending(self) -> bool:
        return self.ready_at is None and not self.failed


class Swarm:
    """`count` clients, at most `concurrency` of them handshaking at any moment."""

    def __init__(self, material: dict, server: tuple[str, int], count: int,
                 concurrency: int) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
        self.config = _client_config(material)
        self.server = server
        self.count = count
        self.concurrency = concurrency
        self.clients: list[_Client] = []
        self.selector = selectors.DefaultSelector()
        self.began = time.monotonic()
        self._next_timers = 0.0

    def _start_more(self, now: float) -> None:
        in_flight = sum(c.pending for c in self.clients[-self.concurrency :])
        while len(self.clients) < self.count and in_flight < self.concurrency:
            c = _Client(self.config, self.server, now)
            self.clients.append(c)
            self.selector.register(c.sock, selectors.EVENT_READ, c)
            c.flush(now)
            in_flight += 1

    def step(self, wait: float = 0.01) -> None:
        """Start clients, move received datagrams into sessions, run due timers."""
        now = time.monotonic()
        self._start_more(now)
        for key, _ in self.selector.select(wait):
            c = key.data
            if not isinstance(c, _Client):
                continue
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                while True:
                    data = c.sock.recv(65535)
                    with contextlib.suppress(ProtocolError):
                        c.session.receive_datagram(data, now)
            c.drain(now)
            c.flush(now)
        now = time.monotonic()
        if now >= self._next_timers:  # a scan over every session costs; a few ms late is fine
            self._next_timers = now + 0.02
            for c in self.clients:
                timer = c.session.get_timer()
                if timer is not None and timer <= now:
                    c.session.handle_timer(now)
                    c.drain(now)
                    c.flush(now)

    @property
    def done(self) -> bool:
        return len(self.clients) == self.count and not any(c.pending for c in self.clients)

    def result(self) -> dict:
        ready = [c.ready_at - self.began for c in self.clients if c.ready_at is not None]
        complete = len(ready) == self.count
        return {
            "clients": self.count,
            "concurrency": self.concurrency,
            "established": len(ready),
            "failed": sum(c.failed for c in self.clients),
            "seconds": max(ready) if complete else time.monotonic() - self.began,
            "first_seconds": min(ready) if ready else None,
        }

    def close(self) -> None:
        for c in self.clients:
            c.sock.close()
        self.selector.close()


def main(argv: list[str]) -> int:
    material_path, host, port, count, concurrency, timeout = argv
    material = json.loads(Path(material_path).read_text())
    swarm = Swarm(material, (host, int(port)), int(count), int(concurrency))
    while not swarm.done and time.monotonic() - swarm.began < float(timeout):
        swarm.step()
    print(json.dumps(swarm.result()), flush=True)
    # Keep answering (acks, retransmits) until the parent has read the server's memory.
    swarm.selector.register(sys.stdin, selectors.EVENT_READ, None)
    while not any(key.data is None for key, _ in swarm.selector.select(0)):
        swarm.step(0.05)
    swarm.close()
    return 0


def spawn_clients(ns: Namespace, material: Path, server: str, port: int, count: int,
                  concurrency: int, timeout: float) -> subprocess.Popen:
    """Start the child that connects `count` simulated clients from namespace `ns`."""
    cmd = [sys.executable, "-m", "xdp_ovpn.bench.peers", str(material), server, str(port),
           str(count), str(concurrency), f"{timeout:g}"]
    return ns.popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
