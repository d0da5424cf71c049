"""Two Session state machines talk over a simulated lossy, reordering, duplicating link.

The link and the clock are seeded and simulated, so every run is the same. The
data channel is the real datachannel.DataChannelCrypto built from KeysReady.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xdp_ovpn.lab.pki import PKI, Credential
from xdp_ovpn.proto.datachannel import DataChannelCrypto, DataKey
from xdp_ovpn.proto.epoch import EpochDataChannel
from xdp_ovpn.proto.epochkeys import EpochKey
from xdp_ovpn.proto.errors import AuthError, ReplayError
from xdp_ovpn.proto.events import (
    AuthFailed,
    AuthRequest,
    Event,
    HandshakeFailed,
    KeyRetired,
    KeysReady,
    PeerExit,
    PushReplyReceived,
    PushRequestReceived,
    SessionClosed,
    SessionEstablished,
)
from xdp_ovpn.proto.session import (
    Session,
    SessionConfig,
    SessionRole,
    State,
)
from xdp_ovpn.proto.statickey import StaticKey, TLSCryptV2ServerKey
from xdp_ovpn.proto.tls import TLSConfig
from xdp_ovpn.proto.tls_auth import TLSAuth
from xdp_ovpn.proto.tls_crypt import TLSCrypt
from xdp_ovpn.proto.tls_crypt_v2 import TLSCryptV2Client, TLSCryptV2Server, generate_client_key
from xdp_ovpn.proto.wrapping import NoWrap

CIPHERS = ["AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305", "AES-192-GCM"]
WRAPPINGS = ["none", "tls-auth", "tls-crypt", "tls-crypt-v2"]
PUSHED = ["topology subnet", "route-gateway 10.8.0.1", "ifconfig 10.8.0.2 255.255.255.0"]


@dataclasses.dataclass
class Creds:
    pki: PKI
    server: Credential
    client: Credential


@pytest.fixture(scope="module")
def creds() -> Creds:
    pki = PKI()
    return Creds(pki, pki.server("server"), pki.client("client-1"))


def tls_config(creds: Creds, server: bool, **kw) -> TLSConfig:
    cred = creds.server if server else creds.client
    return TLSConfig(
        ca_pem=creds.pki.ca_pem,
        cert_pem=cred.cert_pem,
        key_pem=cred.key_pem,
        remote_cert_tls="client" if server else "server",
        **kw,
    )


def wrapper_factories(mode: str, seed: int) -> tuple[Callable, Callable]:
    """(client factory, server factory) for a wrapping mode."""
    rng = random.Random(seed).randbytes
    if mode == "none":
        return NoWrap, NoWrap
    if mode == "tls-auth":
        key = StaticKey.generate(rng)
        return (lambda: TLSAuth(key, 1)), (lambda: TLSAuth(key, 0))
    if mode == "tls-crypt":
        key = StaticKey.generate(rng)
        return (lambda: TLSCrypt(key, False)), (lambda: TLSCrypt(key, True))
    server_key = TLSCryptV2ServerKey.generate(rng)
    client_key = generate_client_key(server_key, b"client-1", rng=rng)
    return (lambda: TLSCryptV2Client(client_key)), (lambda: TLSCryptV2Server(server_key))


def configs(
    creds: Creds,
    mode: str = "none",
    cipher: str = "AES-256-GCM",
    ekm: bool = True,
    p2p: bool = False,
    seed: int = 1,
    **kw,
) -> tuple[SessionConfig, SessionConfig]:
    cfac, sfac = wrapper_factories(mode, seed)
    common = dict(allow_ekm=ekm, **kw)
    client = SessionConfig(
        role=SessionRole.P2P_CLIENT if p2p else SessionRole.CLIENT,
        tls=tls_config(creds, server=False),
        wrapper_factory=cfac,
        data_ciphers=tuple(CIPHERS),
        **common,
    )
    server = SessionConfig(
        role=SessionRole.P2P_SERVER if p2p else SessionRole.SERVER,
        tls=tls_config(creds, server=True),
        wrapper_factory=sfac,
        data_ciphers=(cipher,),
        peer_id=7,
        **common,
    )
    return client, server


class Endpoint:
    """Drives one Session like a minimal control plane would, and keeps its data keys."""

    def __init__(self, name: str, session: Session | None, auto_push: bool = True) -> None:
        self.name = name
        self.session = session
        self.events: list[Event] = []
        self.keys: dict[int, DataChannelCrypto | EpochDataChannel] = {}
        self.auto_push = auto_push
        self.reject: str | None = None

    def drain(self) -> None:
        s = self.session
        while s is not None and (ev := s.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, AuthRequest):
                if self.reject == "ignore":
                    pass
                elif self.reject is None:
                    s.accept_auth()
                else:
                    s.reject_auth(self.reject)
            elif isinstance(ev, PushRequestReceived) and self.auto_push:
                s.send_push_reply(PUSHED)
            elif isinstance(ev, KeysReady) and ev.epoch:
                self.keys[ev.key_id] = EpochDataChannel(
                    ev.key_id, ev.peer_id, ev.cipher,
                    EpochKey(1, ev.encrypt_key), EpochKey(1, ev.decrypt_key),
                )
            elif isinstance(ev, KeysReady):
                self.keys[ev.key_id] = DataChannelCrypto(
                    ev.key_id,
                    ev.peer_id,
                    DataKey(ev.cipher, ev.encrypt_key, ev.encrypt_nonce_tail),
                    DataKey(ev.cipher, ev.decrypt_key, ev.decrypt_nonce_tail),
                )
            elif isinstance(ev, KeyRetired):
                self.keys.pop(ev.key_id, None)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


class Sim:
    """A seeded lossy, duplicating, reordering link with a simulated clock."""

    def __init__(
        self,
        client_cfg: SessionConfig,
        server_cfg: SessionConfig,
        seed: int = 1,
        loss: float = 0.15,
        dup: float = 0.1,
        jitter: float = 0.08,
    ) -> None:
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.loss, self.dup, self.jitter = loss, dup, jitter
        self.client = Endpoint("client", Session(client_cfg, self.now, rng=self.rng.randbytes))
        self.server = Endpoint("server", None)
        self.server_cfg = server_cfg
        self.queue: list[tuple[float, int, str, bytes]] = []
        self.seq = 0
        self.delivered = 0

    def _send(self, dst: str, data: bytes) -> None:
        if self.rng.random() < self.loss:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        for _ in range(copies):
            at = self.now + 0.01 + self.rng.random() * self.jitter  # reordering by jitter
            self.seq += 1
            heapq.heappush(self.queue, (at, self.seq, dst, data))

    def _flush(self) -> None:
        for ep, dst in ((self.client, "server"), (self.server, "client")):
            if ep.session is not None:
                for d in ep.session.datagrams_to_send(self.now):
                    self._send(dst, d)
            ep.drain()

    def step(self) -> bool:
        self._flush()
        timers = [
            t for ep in (self.client, self.server)
            if ep.session is not None and (t := ep.session.get_timer()) is not None
        ]
        candidates = timers + ([self.queue[0][0]] if self.queue else [])
        if not candidates:
            return False
        self.now = max(self.now, min(candidates))
        while self.queue and self.queue[0][0] <= self.now:
            _, _, dst, data = heapq.heappop(self.queue)
            ep = self.client if dst == "client" else self.server
            if ep.session is None:
                ep.session = Session(self.server_cfg, self.now, rng=self.rng.randbytes)
            ep.session.receive_datagram(data, self.now)
            self.delivered += 1
            ep.drain()
        for ep in (self.client, self.server):
            if ep.session is not None:
                t = ep.session.get_timer()
                if t is not None and t <= self.now:
                    ep.session.handle_timer(self.now)
                ep.drain()
        self._flush()
        return True

    def run_until(self, cond: Callable[[], bool], limit: float = 300.0) -> None:
        end = self.now + limit
        while not cond():
            if not self.step() or self.now > end:
                raise AssertionError(f"condition not reached by t={self.now - 1000:.1f}")

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end:
            if not self.step():
                self.now = end
        self.now = max(self.now, end)

    def established(self) -> bool:
        s = self.server.session
        return bool(self.client.keys) and s is not None and bool(self.server.keys)


def exchange(a: Endpoint, b: Endpoint, key_id: int, now: float, count: int = 5) -> None:
    """Data packets a -> b with a's key `key_id`, all decrypt on b."""
    tx = a.keys[key_id]
    for i in range(count):
        payload = f"{a.name} says {i}".encode() * 10
        packet = tx.encrypt(payload, now)
        rx = b.keys[packet[0] & 7]
        assert rx.decrypt(packet, now) == payload


def both_ways(sim: Sim, key_id: int) -> None:
    exchange(sim.client, sim.server, key_id, sim.now)
    exchange(sim.server, sim.client, key_id, sim.now)


@pytest.mark.parametrize("mode", WRAPPINGS)
@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("ekm", [True, False], ids=["ekm", "prf"])
def test_handshake_and_data_over_lossy_link(creds, mode, cipher, ekm):
    seed = zlib.crc32(f"{mode}/{cipher}/{ekm}".encode())  # stable across runs, unlike hash()
    sim = Sim(*configs(creds, mode, cipher, ekm, seed=seed), seed=seed)
    sim.run_until(sim.established)
    client, server = sim.client, sim.server
    (ready_c,) = client.of(KeysReady)
    (ready_s,) = server.of(KeysReady)
    assert ready_c.cipher == ready_s.cipher == cipher
    assert ready_c.ekm == ready_s.ekm == ekm
    assert ready_c.peer_id == ready_s.peer_id == 7
    assert ready_c.encrypt_key == ready_s.decrypt_key
    assert ready_c.decrypt_nonce_tail == ready_s.encrypt_nonce_tail
    (reply,) = client.of(PushReplyReceived)
    assert reply.options[: len(PUSHED)] == PUSHED
    assert "peer-id 7" in reply.options and f"cipher {cipher}" in reply.options
    flags = [o for o in reply.options if o.startswith("protocol-flags")]
    assert flags == (["protocol-flags cc-exit tls-ekm"] if ekm else ["protocol-flags cc-exit"])
    assert client.session.state == server.session.state == State.ESTABLISHED
    assert server.of(AuthRequest)[0].common_name == "client-1"
    assert client.of(SessionEstablished)[0].common_name == "server"
    both_ways(sim, 0)
    if mode == "tls-crypt-v2":
        assert server.session.tls_crypt_v2_metadata == (0, b"client-1")


def test_lossless_link_needs_few_packets(creds):
    sim = Sim(*configs(creds), loss=0, dup=0, jitter=0)
    sim.run_until(sim.established)
    assert sim.delivered < 40
    assert sim.client.session.stats.get("dropped", 0) == 0


@pytest.mark.parametrize("ekm", [True, False], ids=["ekm", "prf"])
def test_p2p_mode(creds, ekm):
    sim = Sim(*configs(creds, "tls-crypt", "CHACHA20-POLY1305", ekm, p2p=True), seed=5)
    sim.run_until(sim.established)
    (kc,), (ks,) = sim.client.of(KeysReady), sim.server.of(KeysReady)
    # The tls-server's data-ciphers order wins; both ends pick the same peer-id.
    assert kc.cipher == ks.cipher == "CHACHA20-POLY1305"
    assert kc.peer_id == ks.peer_id
    if ekm:
        assert kc.peer_id != 0x76706E  # exported from TLS, not the fixed 'vpn'
    else:
        assert kc.peer_id == 0x76706E
    assert not sim.client.of(PushReplyReceived) and not sim.server.of(AuthRequest)
    both_ways(sim, 0)


@pytest.mark.parametrize("mode", WRAPPINGS)
def test_renegotiation_switches_keys_and_retires_lame_duck(creds, mode):
    cc, sc = configs(creds, mode, tran_window=60.0)
    sim = Sim(cc, sc, seed=3)
    sim.run_until(sim.established)
    old_tx = sim.client.keys[0]
    sim.client.session.renegotiate(sim.now)
    sim.run_until(lambda: 1 in sim.client.keys and 1 in sim.server.keys)
    assert sim.client.session.key_id == sim.server.session.key_id == 1
    # New key both ways; packets under the lame duck still decrypt during the transition.
    both_ways(sim, 1)
    exchange(sim.client, sim.server, 0, sim.now)
    assert old_tx is sim.client.keys[0]
    sim.advance(61)
    assert [e.key_id for e in sim.client.of(KeyRetired)] == [0]
    assert [e.key_id for e in sim.server.of(KeyRetired)] == [0]
    assert 0 not in sim.server.keys
    both_ways(sim, 1)
    # Renegotiation re-authenticates nothing new: one AuthRequest for the whole session.
    assert len(sim.server.of(AuthRequest)) == 1


def test_key_ids_cycle_one_to_seven(creds):
    cc, sc = configs(creds, tran_window=1.0)
    sim = Sim(cc, sc, seed=4, loss=0.05)
    sim.run_until(sim.established)
    seen = []
    for _ in range(8):
        initiator = sim.server if len(seen) % 2 else sim.client
        initiator.session.renegotiate(sim.now)
        want = len([e for e in sim.client.of(KeysReady)]) + 1
        sim.run_until(lambda w=want: len(sim.client.of(KeysReady)) == w and len(
            sim.server.of(KeysReady)) == w)
        seen.append(sim.client.session.key_id)
        both_ways(sim, seen[-1])
        sim.advance(2)
    assert seen == [1, 2, 3, 4, 5, 6, 7, 1]


def test_reneg_seconds_triggers_soft_reset(creds):
    cc, sc = configs(creds, reneg_seconds=100.0, tran_window=10.0)
    sim = Sim(cc, sc, seed=6)
    sim.run_until(sim.established)
    sim.advance(120)
    assert 1 in sim.client.keys and 1 in sim.server.keys
    assert sim.client.session.state == State.ESTABLISHED
    both_ways(sim, 1)


def test_auth_failed(creds):
    sim = Sim(*configs(creds, "tls-crypt"), seed=8)
    sim.server.reject = "bad password"
    sim.run_until(lambda: bool(sim.client.of(AuthFailed)))
    assert sim.client.of(AuthFailed)[0].reason == "bad password"
    assert sim.client.session.state == State.FAILED
    assert not sim.client.keys and not sim.server.keys
    sim.run_until(lambda: sim.server.session.is_closed)
    assert sim.server.of(SessionClosed)


def test_client_exit_reaches_server(creds):
    sim = Sim(*configs(creds), seed=9)
    sim.run_until(sim.established)
    sim.client.session.close(sim.now)
    sim.run_until(lambda: bool(sim.server.of(PeerExit)))
    sim.run_until(lambda: sim.client.session.is_closed and sim.server.session.is_closed)
    assert sim.client.of(SessionClosed) and sim.server.of(SessionClosed)


def test_server_exit_reaches_p2p_client(creds):
    sim = Sim(*configs(creds, p2p=True), seed=10)
    sim.run_until(sim.established)
    sim.server.session.close(sim.now)
    sim.run_until(lambda: bool(sim.client.of(PeerExit)))


def test_untrusted_server_certificate_fails_handshake(creds):
    cc, sc = configs(creds)
    other = PKI("other CA")
    cc = dataclasses.replace(cc, tls=dataclasses.replace(cc.tls, ca_pem=other.ca_pem))
    sim = Sim(cc, sc, seed=11, loss=0)
    sim.run_until(lambda: sim.client.session.is_closed)
    (failed,) = sim.client.of(HandshakeFailed)
    assert "VERIFY ERROR" in failed.reason
    assert not sim.client.keys


def test_silent_server_times_out_after_hand_window(creds):
    cc, sc = configs(creds, hand_window=30.0)
    sim = Sim(cc, sc, seed=12, loss=1.0)
    sim.run_until(lambda: sim.client.session.is_closed, limit=60)
    assert sim.client.of(HandshakeFailed)
    assert 1029 <= sim.now <= 1031


def test_wrong_tls_crypt_key_is_dropped_not_raised(creds):
    cc, sc = configs(creds, "tls-crypt", seed=1)
    _, sc = configs(creds, "tls-crypt", seed=2)
    sim = Sim(cc, sc, seed=13, loss=0)
    sim.advance(10)
    assert sim.server.session.stats.get("dropped", 0) >= 1
    assert sim.server.session.remote_session_id is None


def test_push_reply_split_and_reassembled(creds):
    cc, sc = configs(creds)
    sim = Sim(cc, sc, seed=14)
    sim.server.auto_push = False
    sim.run_until(lambda: bool(sim.server.of(PushRequestReceived)))
    many = [f"route 10.{i}.0.0 255.255.0.0" for i in range(120)]
    sim.server.session.send_push_reply(many)
    sim.run_until(sim.established)
    (reply,) = sim.client.of(PushReplyReceived)
    assert reply.options[:120] == many


def test_client_refuses_a_pushed_epoch_format_it_did_not_offer(creds):
    cc, sc = configs(creds)
    sim = Sim(cc, sc, seed=15)
    sim.server.auto_push = False
    sim.run_until(lambda: bool(sim.server.of(PushRequestReceived)))
    sim.server.session.send_push_reply(
        ["peer-id 7", "cipher AES-256-GCM", "protocol-flags cc-exit tls-ekm aead-epoch"]
    )
    sim.run_until(lambda: bool(sim.client.of(HandshakeFailed)))
    (failed,) = sim.client.of(HandshakeFailed)
    assert "epoch data format" in failed.reason and failed.fatal
    assert not sim.client.of(KeysReady)


def _epoch_configs(creds, client: bool, server: bool, **kw):
    cc, sc = configs(creds, **kw)
    return dataclasses.replace(cc, epoch_data=client), dataclasses.replace(sc, epoch_data=server)


@pytest.mark.parametrize("ekm", [True, False], ids=["ekm", "prf"])
def test_epoch_format_when_both_data_planes_have_it(creds, ekm):
    """The client announces IV_PROTO_DATA_EPOCH, the server pushes aead-epoch (whatever
    derived key2, as 2.7 does), and both get the E_1 secrets of the two chains."""
    sim = Sim(*_epoch_configs(creds, True, True, cipher="AES-128-GCM", ekm=ekm), seed=21)
    sim.run_until(sim.established)
    assert int(sim.server.session.peer_info["IV_PROTO"]) & 1 << 10
    (reply,) = sim.client.of(PushReplyReceived)
    flags = [o for o in reply.options if o.startswith("protocol-flags")]
    assert flags == [f"protocol-flags cc-exit{' tls-ekm' if ekm else ''} aead-epoch"]
    (kc,), (ks,) = sim.client.of(KeysReady), sim.server.of(KeysReady)
    assert kc.epoch and ks.epoch and kc.ekm == ks.ekm == ekm
    assert len(kc.encrypt_key) == 32 and kc.encrypt_nonce_tail == b""  # E_1, not the key
    assert kc.encrypt_key == ks.decrypt_key and kc.decrypt_key == ks.encrypt_key
    assert kc.encrypt_key != kc.decrypt_key
    both_ways(sim, 0)
    # A rotated send key is still read by the peer (a future receive key).
    sim.client.keys[0].rotate_send()
    both_ways(sim, 0)
    assert sim.server.keys[0].receive_epoch == 2


@pytest.mark.parametrize(("client", "server"), [(True, False), (False, True)])
def test_epoch_format_needs_both_sides(creds, client, server):
    sim = Sim(*_epoch_configs(creds, client, server), seed=22)
    sim.run_until(sim.established)
    assert bool(int(sim.server.session.peer_info["IV_PROTO"]) & 1 << 10) == client
    (reply,) = sim.client.of(PushReplyReceived)
    assert not any("aead-epoch" in o for o in reply.options)
    assert not any(e.epoch for e in sim.client.of(KeysReady) + sim.server.of(KeysReady))
    both_ways(sim, 0)


def test_epoch_format_survives_renegotiation(creds):
    sim = Sim(*_epoch_configs(creds, True, True, tran_window=60.0), seed=23)
    sim.run_until(sim.established)
    sim.server.session.renegotiate(sim.now)
    sim.run_until(lambda: 1 in sim.client.keys and 1 in sim.server.keys)
    assert all(e.epoch for e in sim.client.of(KeysReady) + sim.server.of(KeysReady))
    both_ways(sim, 1)
    exchange(sim.client, sim.server, 0, sim.now)


@pytest.mark.parametrize(("client", "server"), [(True, True), (True, False), (False, True)])
def test_p2p_epoch_format(creds, client, server):
    """p2p NCP: both ends decide alike from each other's IV_PROTO (p2p_ncp_set_options)."""
    cc, sc = _epoch_configs(creds, client, server, cipher="CHACHA20-POLY1305", p2p=True)
    sim = Sim(cc, sc, seed=24)
    sim.run_until(sim.established)
    events = sim.client.of(KeysReady) + sim.server.of(KeysReady)
    assert [e.epoch for e in events] == [client and server] * 2
    both_ways(sim, 0)


def test_client_takes_the_epoch_format_it_offered_from_a_push(creds):
    cc, sc = _epoch_configs(creds, True, False)
    sim = Sim(cc, sc, seed=25)
    sim.server.auto_push = False
    sim.run_until(lambda: bool(sim.server.of(PushRequestReceived)))
    sim.server.session.send_push_reply(["peer-id 7", "protocol-flags cc-exit aead-epoch"])
    sim.run_until(lambda: bool(sim.client.of(KeysReady)))
    (ready,) = sim.client.of(KeysReady)
    assert ready.epoch and ready.cipher == "AES-256-GCM"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_datagrams_are_dropped_without_exceptions(creds, data):
    cc, sc = configs(creds)
    for cfg in (cc, sc):
        s = Session(cfg, 0.0, rng=random.Random(0).randbytes)
        s.receive_datagram(data, 1.0)
        s.datagrams_to_send(1.0)


def test_replayed_data_packet_is_rejected_by_datachannel(creds):
    sim = Sim(*configs(creds), seed=15)
    sim.run_until(sim.established)
    packet = sim.client.keys[0].encrypt(b"x" * 40, sim.now)
    sim.server.keys[0].decrypt(packet, sim.now)
    with pytest.raises((ReplayError, AuthError)):
        sim.server.keys[0].decrypt(packet, sim.now)


@pytest.fixture(scope="module")
def recorded(creds) -> tuple[SessionConfig, list[bytes]]:
    """The first packets a client sends over a clean link (reset, then ClientHello)."""
    cc, sc = configs(creds, "tls-auth")
    client = Session(cc, 0.0, rng=random.Random(1).randbytes)
    server = Session(sc, 0.0, rng=random.Random(2).randbytes)
    sent = client.datagrams_to_send(0.0)
    for d in sent:
        server.receive_datagram(d, 0.1)
    for d in server.datagrams_to_send(0.1):
        client.receive_datagram(d, 0.2)
    sent += client.datagrams_to_send(0.2)
    return sc, sent


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_handshake_packets_never_raise(recorded, data):
    sc, sent = recorded
    server = Session(sc, 0.0, rng=random.Random(2).randbytes)
    index = data.draw(st.integers(0, len(sent) - 1))
    for i, packet in enumerate(sent):
        if i == index:
            buf = bytearray(packet)
            for _ in range(data.draw(st.integers(1, 4))):
                pos = data.draw(st.integers(0, len(buf) - 1))
                buf[pos] ^= data.draw(st.integers(1, 255))
            packet = bytes(buf[: data.draw(st.integers(1, len(buf)))])
        server.receive_datagram(packet, 0.1 + i)
        server.datagrams_to_send(0.1 + i)
    assert server.state in (State.HANDSHAKE, State.FAILED)


def test_data_volume_triggers_renegotiation(creds):
    cc, sc = configs(creds, reneg_bytes=10_000)
    sim = Sim(cc, sc, seed=16)
    sim.run_until(sim.established)
    sim.client.session.add_data_traffic(9_000, 10, sim.now)
    assert sim.client.session.key_id == 0
    sim.client.session.add_data_traffic(2_000, 2, sim.now)
    sim.run_until(lambda: 1 in sim.server.keys and 1 in sim.client.keys)


def test_auth_token_replaces_password_on_renegotiation(creds):
    cc, sc = configs(creds, username="alice", password="secret")
    sim = Sim(cc, sc, seed=17)
    sim.server.auto_push = False
    sim.run_until(lambda: bool(sim.server.of(PushRequestReceived)))
    (req,) = sim.server.of(AuthRequest)
    assert (req.username, req.password) == ("alice", "secret")
    sim.server.session.send_push_reply(["auth-token SESS_token"])
    sim.run_until(sim.established)
    assert sim.client.session.auth_token == "SESS_token"
    cc2 = dataclasses.replace(sc, reauth_on_renegotiation=True)
    sim.server.session.config = cc2
    sim.client.session.renegotiate(sim.now)
    sim.run_until(lambda: len(sim.server.of(AuthRequest)) == 2)
    assert sim.server.of(AuthRequest)[1].password == "SESS_token"


def test_unanswered_auth_request_fails_after_hand_window(creds):
    cc, sc = configs(creds, hand_window=20.0)
    sim = Sim(cc, sc, seed=18, loss=0)
    sim.server.reject = "ignore"
    sim.run_until(lambda: bool(sim.client.of(AuthFailed)), limit=40)
    assert 1019 <= sim.now <= 1022
    assert not sim.server.keys
