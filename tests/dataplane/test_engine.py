"""The engine seam: selection by name, and the Python engine's socket loops through the
contract alone (no root: UDP on loopback, a datagram socketpair standing in for the TUN)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import pytest

from xdp_ovpn.dataplane.api import DataPlaneError, PeerExpired
from xdp_ovpn.dataplane.engine import (
    ControlDatagram,
    EngineConfig,
    epoch_format,
    make_engine,
    native_available,
    resolve,
)
from xdp_ovpn.proto.constants import OCC_EXIT_PAYLOAD, PING_PAYLOAD
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey
from xdp_ovpn.proto.epoch import EpochDataChannel, unpack_packet_id
from xdp_ovpn.proto.epochkeys import EpochKey

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


@pytest.mark.skipif(not native_available(), reason="the native engine is not built")
def test_a_build_older_than_its_sources_is_refused_in_one_line(monkeypatch, tmp_path) -> None:
    from xdp_ovpn.dataplane import nativesrc

    monkeypatch.delenv("XDP_OVPN_ENGINE", raising=False)
    assert resolve("native") == "native"  # this build is its sources'
    for src in nativesrc.NATIVE_DIR.iterdir():
        (tmp_path / src.name).write_bytes(src.read_bytes())
    monkeypatch.setattr(nativesrc, "NATIVE_DIR", tmp_path)
    assert resolve("auto") == "native"
    with (tmp_path / "io.c").open("a") as f:
        f.write("/* edited after the build */\n")
    for name in ("auto", "native"):
        with pytest.raises(DataPlaneError, match=r"^the native engine was built from other"):
            resolve(name)
    assert resolve("python") == "python"


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


# -- the epoch data format (python engine) --------------------------------------------------

E1_C2S, E1_S2C = bytes(range(100, 132)), bytes(range(200, 232))


def _epoch_client(peer_id: int) -> EpochDataChannel:
    """A client's slot whose server end is new_key(epoch=True) with E1_S2C, E1_C2S."""
    return EpochDataChannel(0, peer_id, "AES-256-GCM", EpochKey(1, E1_C2S), EpochKey(1, E1_S2C))


def test_engines_say_whether_they_do_the_epoch_format() -> None:
    assert epoch_format("python")
    if native_available():  # a slot shared by workers too (test_native_shared)
        assert epoch_format("native")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        engine = make_engine("native", sock, EngineConfig(False, 64, 15))
        engine.add_peer(7, ("127.0.0.1", 9), None, None, (), 0.0)
        with pytest.raises(DataPlaneError, match="too small"):
            engine.new_key(7, 0, 0, "AES-256-GCM", E1_S2C, b"", E1_C2S, b"",
                           shared=memoryview(bytearray(64)), epoch=True)
        with pytest.raises(DataPlaneError, match="key material"):  # a 2.6 key's tails
            engine.new_key(7, 0, 0, "AES-256-GCM", E1_S2C, TAIL, E1_C2S, TAIL, epoch=True)
        engine.close()
        sock.close()


ENGINES_HERE = ["python"] + (["native"] if native_available() else [])


@contextlib.contextmanager
def _two_formats(name: str, config: EngineConfig) -> Iterator[tuple]:
    """(engine, its socket, two peers' sockets, the TUN's far end): peer 7 (10.8.0.7) with
    an epoch-format key (its side: _epoch_client), peer 8 (10.8.0.8) with a 2.6 one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
    for c in clients:
        c.bind(("127.0.0.1", 0))
        c.settimeout(2)
    tun, tun_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun.setblocking(False)
    tun_peer.settimeout(2)
    engine = make_engine(name, sock, config)
    try:
        engine.add_peer(7, clients[0].getsockname(), "10.8.0.7", None, (), 0.0)
        engine.add_peer(8, clients[1].getsockname(), "10.8.0.8", None, (), 0.0)
        engine.new_key(7, 0, 0, "AES-256-GCM", E1_S2C, b"", E1_C2S, b"", epoch=True)
        engine.new_key(8, 0, 0, "AES-256-GCM", KEY, TAIL, KEY, TAIL)
        engine.set_tun(tun.fileno(), False)
        yield engine, sock, clients, tun_peer
    finally:
        engine.close()
        for s in (sock, *clients, tun, tun_peer):
            s.close()


@pytest.mark.parametrize("name", ENGINES_HERE)
@pytest.mark.parametrize("gso", [False, True], ids=["datagrams", "gso-runs"])
def test_epoch_keys_beside_26_keys(name: str, gso: bool) -> None:
    """Two peers, one in each data format: socket receive (data, ping, replay), TUN send
    interleaved between them (the GSO loop moves each plaintext to its format's place),
    and the epoch peer's rotation followed on receive."""
    config = EngineConfig(single_peer=False, replay_window=64, replay_time=15, gso=gso)
    with _two_formats(name, config) as (engine, sock, clients, tun_peer):
        epoch_peer = _epoch_client(7)
        old_peer = DataChannelCrypto(0, 8, PEER_KEY, PEER_KEY)
        server = sock.getsockname()
        # Receive: data, a ping, a replay, then data in the next epoch.
        first = epoch_peer.encrypt(_ipv4("10.8.0.7", "10.8.0.1", b"e1"), 0.0)
        for packet in (first, epoch_peer.encrypt(PING_PAYLOAD, 0.0), first):
            clients[0].sendto(packet, server)
        epoch_peer.rotate_send()
        clients[0].sendto(epoch_peer.encrypt(_ipv4("10.8.0.7", "10.8.0.1", b"e2"), 0.0), server)
        clients[1].sendto(old_peer.encrypt(_ipv4("10.8.0.8", "10.8.0.1", b"26"), 0.0), server)
        handled = 0
        while handled < 5:
            handled += engine.rx_socket(64, 1.0)
        assert sorted(tun_peer.recv(2048)[20:] for _ in range(3)) == [b"26", b"e1", b"e2"]
        stats = engine.peer_stats(7)
        assert stats.drops == {"ReplayError": 1}
        assert (stats.rx_packets, stats.link_rx_packets) == (2, 3)
        # Send: interleaved, same sizes, so GSO runs break on the peer only.
        sent = [(7 + i % 2, bytes([i]) * 50) for i in range(6)]
        for peer_id, payload in sent:
            tun_peer.send(_ipv4("10.8.0.1", f"10.8.0.{peer_id}", payload))
        assert engine.tx(64, 1.0) == 6
        got_epoch = [epoch_peer.decrypt(clients[0].recv(2048), 1.0)[20:] for _ in range(3)]
        got_old = [old_peer.decrypt(clients[1].recv(2048), 1.0)[20:] for _ in range(3)]
        assert got_epoch == [p for i, p in sent if i == 7]
        assert got_old == [p for i, p in sent if i == 8]
        # The server's send key followed the client's to epoch 2 (a future key for it).
        assert epoch_peer.receive_epoch == 2
        assert engine.peer_stats(7).tx_packets == 3


def test_a_replacement_worker_sends_in_a_fresh_epoch() -> None:
    """The ledger keeps an epoch key's receive and send epochs: a key installed again from
    it (a restarted worker) sends in the next epoch, never reusing a nonce, and receives
    from the epoch the peer had moved to."""
    ids = memoryview(bytearray(8)).cast("I")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer = _epoch_client(7)
    peer.advance_send(3)
    try:
        sent = []
        for _ in range(2):  # the first worker, then its replacement
            engine = make_engine("python", sock, EngineConfig(False, 64, 15))
            engine.add_peer(7, ("127.0.0.1", 9), "10.8.0.7", None, (), 0.0)
            engine.new_key(7, 0, 0, "AES-256-GCM", E1_S2C, b"", E1_C2S, b"", ids, 1,
                           epoch=True)
            crypto = engine.peers.get(7).keys[0]
            assert crypto.decrypt(peer.encrypt(b"up", 0.0), 0.0) == b"up"
            sent.append(crypto.encrypt(b"x", 0.0))
            engine.close()
        assert ids[1] == 3 << 16 | 4 and ids[0] == 0  # receive 3, send 3 then 4
        assert [unpack_packet_id(p[4:12]) for p in sent] == [(3, 1), (4, 1)]
        assert [peer.decrypt(p, 0.0) for p in sent] == [b"x", b"x"]
    finally:
        sock.close()


@pytest.mark.parametrize("name", ENGINES_HERE)
def test_syns_are_clamped_to_the_mss_of_their_keys_format(name: str) -> None:
    """The epoch format's packets are 4 bytes longer: its peers' SYNs get mss_epoch, both
    ways; a 2.6 peer's get mss."""
    from tests.dataplane.test_mss import _mss, _syn

    config = EngineConfig(single_peer=False, replay_window=64, replay_time=15, gso=True,
                          mss=1300, mss_epoch=1296)
    with _two_formats(name, config) as (engine, sock, clients, tun_peer):
        epoch_peer, old_peer = _epoch_client(7), DataChannelCrypto(0, 8, PEER_KEY, PEER_KEY)
        for peer_id, crypto, client in ((7, epoch_peer, clients[0]), (8, old_peer, clients[1])):
            syn = _syn(4, 1460)
            syn[16:20] = socket.inet_aton("10.8.0.1")
            syn[12:16] = socket.inet_aton(f"10.8.0.{peer_id}")
            client.sendto(crypto.encrypt(bytes(syn), 0.0), sock.getsockname())
            while not engine.rx_socket(64, 1.0):
                pass
            syn[12:16], syn[16:20] = syn[16:20], syn[12:16]
            tun_peer.send(bytes(syn))
            engine.tx(64, 1.0)
            want = 1296 if peer_id == 7 else 1300
            assert _mss(bytearray(tun_peer.recv(2048))) == want
            assert _mss(bytearray(crypto.decrypt(client.recv(2048), 1.0))) == want
