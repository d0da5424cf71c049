"""The engine seam: selection by name, and the Python engine's socket loops through the
contract alone (no root: UDP on loopback, a datagram socketpair standing in for the TUN)."""

from __future__ import annotations

import socket
import time

import pytest

from xdp_ovpn.dataplane.api import DataPlaneError, PeerExpired
from xdp_ovpn.dataplane.engine import (
    ControlDatagram,
    EngineConfig,
    make_engine,
    native_available,
    resolve,
)
from xdp_ovpn.proto.constants import OCC_EXIT_PAYLOAD, PING_PAYLOAD
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey

KEY = bytes(range(32))
TAIL = bytes(range(8))
PEER_KEY = DataKey("AES-256-GCM", KEY, TAIL)


def test_engine_names_resolve_or_fail_with_one_line(monkeypatch) -> None:
    monkeypatch.delenv("XDP_OVPN_ENGINE", raising=False)
    assert resolve("python") == "python"
    assert resolve("auto") == ("native" if native_available() else "python")
    with pytest.raises(DataPlaneError, match="unknown engine"):
        resolve("turbo")
    monkeypatch.setenv("XDP_OVPN_ENGINE", "python")  # a whole suite on the reference engine
    assert resolve("auto") == "python" and resolve("native") == "native"
    monkeypatch.setenv("XDP_OVPN_ENGINE", "turbo")
    with pytest.raises(DataPlaneError, match="unknown engine"):
        resolve("auto")


class _Rig:
    """A server-side engine on a loopback UDP socket, one client peer, a datagram TUN."""

    def __init__(self, name: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client.bind(("127.0.0.1", 0))
        self.client.settimeout(2)
        self.tun, self.tun_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.tun_peer.settimeout(2)
        self.tun.setblocking(False)  # as the worker hands it over
        config = EngineConfig(single_peer=False, replay_window=64, replay_time=15,
                              check_source=False)
        self.engine = make_engine(name, self.sock, config)
        self.engine.add_peer(7, self.client.getsockname(), "10.8.0.2", None, (), 0.0)
        self.engine.new_key(7, 0, 0, "AES-256-GCM", KEY, TAIL, KEY, TAIL)
        self.engine.set_tun(self.tun.fileno(), False)
        self.remote = DataChannelCrypto(0, 7, PEER_KEY, PEER_KEY)  # the client's side

    def close(self) -> None:
        self.engine.close()
        for s in (self.sock, self.client, self.tun, self.tun_peer):
            s.close()


@pytest.fixture
def rig():
    r = _Rig("python")
    yield r
    r.close()


ENGINES = ["python", pytest.param("native", marks=pytest.mark.skipif(
    not native_available(), reason="the native engine is not built"))]


@pytest.fixture(params=ENGINES)
def any_rig(request):
    r = _Rig(request.param)
    yield r
    r.close()


def _ipv4(src: str, dst: str, payload: bytes) -> bytes:
    header = bytearray(20)
    header[0] = 0x45
    header[2:4] = (20 + len(payload)).to_bytes(2, "big")
    header[9] = 17
    header[12:16] = socket.inet_aton(src)
    header[16:20] = socket.inet_aton(dst)
    return bytes(header) + payload


def test_socket_rx_decrypts_data_to_the_tun_and_hands_control_up(rig: _Rig) -> None:
    packet = _ipv4("10.8.0.2", "10.8.0.1", b"hello")
    server = rig.sock.getsockname()
    rig.client.sendto(rig.remote.encrypt(packet, 0.0), server)
    rig.client.sendto(b"\x38control", server)  # P_CONTROL_HARD_RESET_CLIENT_V2 opcode
    rig.client.sendto(rig.remote.encrypt(PING_PAYLOAD, 0.0), server)
    handled = 0
    while handled < 3:
        handled += rig.engine.rx_socket(64, 1.0)
    assert rig.tun_peer.recv(2048) == packet  # the ping is consumed, not written
    events = rig.engine.events()
    assert events == [ControlDatagram(b"\x38control", rig.client.getsockname())]
    stats = rig.engine.peer_stats(7)
    assert (stats.rx_packets, stats.link_rx_packets) == (1, 2)


def test_tun_tx_encrypts_to_the_peer_by_destination_and_counts_strays(rig: _Rig) -> None:
    packet = _ipv4("10.8.0.1", "10.8.0.2", b"to the client")
    rig.tun_peer.send(packet)
    rig.tun_peer.send(_ipv4("10.8.0.1", "10.9.9.9", b"nobody"))
    assert rig.engine.tx(64, 1.0) == 2
    assert rig.remote.decrypt(rig.client.recv(2048), 1.0) == packet
    assert rig.engine.drops() == {"no route to peer": 1}
    assert rig.engine.peer_stats(7).tx_packets == 1


def test_occ_exit_removes_the_peer_with_an_event(rig: _Rig) -> None:
    rig.client.sendto(rig.remote.encrypt(OCC_EXIT_PAYLOAD, 0.0), rig.sock.getsockname())
    while not rig.engine.rx_socket(64, 1.0):
        pass
    assert rig.engine.events() == [PeerExpired(7, "exit")]
    assert rig.engine.peer_ids() == []


# -- serve: the engine's own wait loop ------------------------------------------------------


def test_serve_handles_packets_both_ways_without_returning_until_the_deadline(
        any_rig: _Rig) -> None:
    rig = any_rig
    inbound = [_ipv4("10.8.0.2", "10.8.0.1", b"in %d" % i) for i in range(3)]
    for packet in inbound:
        rig.client.sendto(rig.remote.encrypt(packet, 0.0), rig.sock.getsockname())
    outbound = _ipv4("10.8.0.1", "10.8.0.2", b"out")
    rig.tun_peer.send(outbound)
    rig.engine.serve((), 0.3, True, True)
    assert [rig.tun_peer.recv(2048) for _ in inbound] == inbound
    assert rig.remote.decrypt(rig.client.recv(2048), 1.0) == outbound
    assert rig.engine.events() == []
    stats = rig.engine.peer_stats(7)
    assert (stats.rx_packets, stats.tx_packets) == (3, 1)


def test_serve_returns_for_a_control_datagram_and_for_a_wake_fd(any_rig: _Rig) -> None:
    rig = any_rig
    began = time.monotonic()
    rig.client.sendto(b"\x38control", rig.sock.getsockname())
    rig.engine.serve((), 30.0, True, True)
    assert rig.engine.events() == [ControlDatagram(b"\x38control", rig.client.getsockname())]
    wake, waker = socket.socketpair()
    with wake, waker:
        waker.send(b"verb")
        rig.engine.serve((wake.fileno(),), 30.0, True, True)
        assert wake.recv(16) == b"verb"  # left for the worker to read
    assert time.monotonic() - began < 30  # it returned for them, not at the deadline


def test_serve_leaves_the_socket_and_the_tun_to_the_worker_that_reads_them(
        any_rig: _Rig) -> None:
    rig = any_rig
    rig.client.sendto(b"\x38control", rig.sock.getsockname())
    rig.tun_peer.send(_ipv4("10.8.0.1", "10.8.0.2", b"out"))
    rig.engine.serve((), 0.2, False, False)
    assert rig.engine.events() == [] and rig.engine.peer_stats(7).tx_packets == 0
    assert rig.engine.rx_socket(64, 1.0) == 1 and rig.engine.tx(64, 1.0) == 1
