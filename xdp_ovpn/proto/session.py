"""One OpenVPN control-channel session per peer, sans I/O (aioquic style).

Bytes and a clock go in (`receive_datagram`, `handle_timer`), datagrams and
typed events come out (`datagrams_to_send`, `next_event`). The state machine
follows openvpn 2.6 (ssl.c tls_process_state, tls_pre_decrypt, push.c,
multi.c, ssl_ncp.c): each key-id has its own key state with a TLS session
and a reliability layer; a soft reset moves the primary key to "lame duck"
until the transition window ends.

Key states go S_PRE_START (own reset sent) -> S_START (reset acked) ->
S_SENT_KEY / S_GOT_KEY (key method 2 written / read) -> S_ACTIVE (own
messages acked) -> S_GENERATED_KEYS. When keys are derived depends on the
role, exactly as in openvpn: a pulling client after the final PUSH_REPLY, a
server once the client is authenticated (multi_client_connect_late_setup), a
TLS p2p peer when the first key goes active, and everyone at S_ACTIVE on
renegotiation.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import push
from .constants import (
    DEFAULT_DATA_CIPHERS,
    DEFAULT_TLS_MTU,
    KEY2_LEN,
    KEY_ID_MASK,
    SESSION_ID_LEN,
    TLS_EKM_LABEL,
    IVProto,
    Opcode,
)
from .epochkeys import epoch_format_pushed
from .errors import NegotiationError, ParseError, ProtocolError, TLSError
from .events import (
    AuthFailed,
    AuthPending,
    AuthRequest,
    ControlMessageReceived,
    Event,
    HandshakeFailed,
    KeyRetired,
    KeysReady,
    PeerExit,
    PushReplyReceived,
    PushRequestReceived,
    RestartRequested,
    SessionClosed,
    SessionEstablished,
)
from .keymethod2 import KeyMethod2
from .keys import (
    EKM_P2P_PEER_ID_LABEL,
    EKM_P2P_PEER_ID_LEN,
    DirectionalKeys,
    prf_key_expansion,
    split_key2,
)
from .ncp import (
    check_pushed_cipher,
    client_cipher_without_push,
    negotiate_p2p,
    peer_supports_ncp,
    select_server_cipher,
)
from .packet import decode_control, encode_control
from .peerinfo import client_peer_info, iv_proto, options_string, parse_peer_info
from .peerinfo import options_string_extract as _options_extract
from .push import (
    TLS_CHANNEL_BUF_SIZE,
    MessageSplitter,
    PushReplyAssembler,
    build_auth_failed,
    build_push_reply,
    encode_message,
    parse_control_message,
)
from .reliable import ReliableLayer
from .tls import TLSConfig, TLSConnection
from .tls_auth import TLSAuth
from .tls_crypt_v2 import TLSCryptV2Client, TLSCryptV2Server
from .wrapping import ControlWrapper, NoWrap, peek_header

RESET_OPCODES = frozenset(
    {Opcode.HARD_RESET_CLIENT_V2, Opcode.HARD_RESET_CLIENT_V3, Opcode.HARD_RESET_SERVER_V2}
)
CLIENT_RESET_OPCODES = frozenset({Opcode.HARD_RESET_CLIENT_V2, Opcode.HARD_RESET_CLIENT_V3})
PUSH_REQUEST_INTERVAL = 5.0  # common.h
PUSH_REPLY_HOLDOFF = 30.0  # push.c: sent_push_reply_expiry
EXIT_LINGER = 5.0  # push.c receive_exit_message / schedule_exit


class SessionRole(enum.Enum):
    """What this end of the TLS session is (config.Role is the endpoint's mode)."""

    CLIENT = "client"  # tls-client + pull
    SERVER = "server"  # tls-server in mode server
    P2P_CLIENT = "p2p-client"  # tls-client, no pull (2.6 p2p NCP)
    P2P_SERVER = "p2p-server"  # tls-server, no mode server

    @property
    def tls_server(self) -> bool:
        return self in (SessionRole.SERVER, SessionRole.P2P_SERVER)

    @property
    def p2p(self) -> bool:
        return self in (SessionRole.P2P_CLIENT, SessionRole.P2P_SERVER)


class State(enum.Enum):
    HANDSHAKE = "handshake"  # first key not yet active
    AUTHENTICATING = "authenticating"  # server: waiting for accept_auth; client: PUSH_REPLY
    ESTABLISHED = "established"  # data keys for key-id 0 derived
    CLOSING = "closing"  # a final message (EXIT, AUTH_FAILED) is being delivered
    CLOSED = "closed"
    FAILED = "failed"


class KS(enum.IntEnum):
    """Key-state progress, named and ordered like openvpn's S_* constants."""

    PRE_START = 1
    START = 2
    SENT_KEY = 3
    GOT_KEY = 4
    ACTIVE = 5
    GENERATED_KEYS = 6
    ERROR = 7


Wrapper = ControlWrapper | TLSCryptV2Server


@dataclass
class SessionConfig:
    """Everything a session needs; one config may serve many sessions (a server's)."""

    role: SessionRole
    tls: TLSConfig
    # A fresh wrapper per session: NoWrap, TLSAuth, TLSCrypt, TLSCryptV2Client or
    # (server) TLSCryptV2Server, which then unwraps the client's key from its reset.
    wrapper_factory: Callable[[], Wrapper] = NoWrap
    data_ciphers: tuple[str, ...] = DEFAULT_DATA_CIPHERS
    data_ciphers_fallback: str | None = None
    allow_ekm: bool = True
    options_string: str | None = None
    peer_info_extra: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    password: str | None = None
    peer_id: int = 0  # server: the id this client gets (push `peer-id`)
    reneg_seconds: float | None = 3600.0
    reneg_bytes: int | None = None
    reneg_packets: int | None = None
    hand_window: float = 60.0
    tran_window: float = 3600.0  # openvpn's --tran-window default
    tls_timeout: float = 2.0
    tls_mtu: int = DEFAULT_TLS_MTU
    udp_overhead: int = 28  # IPv4 + UDP; 48 over IPv6
    tun_mtu: int = 1500
    # Server: re-ask the driver on renegotiation instead of accepting the same identity.
    reauth_on_renegotiation: bool = False


@dataclass
class _KeyState:
    key_id: int
    tls: TLSConnection
    rel: ReliableLayer
    initial_opcode: Opcode
    state: KS
    must_negotiate: float
    auth_deadline: float
    local_km: KeyMethod2 | None = None
    remote_km: KeyMethod2 | None = None
    authenticated: bool | None = None  # None: undecided
    established: float | None = None
    must_die: float | None = None
    keys: DirectionalKeys | None = None
    plaintext_in: deque[bytes] = field(default_factory=deque)
    n_bytes: int = 0
    n_packets: int = 0


class Session:
    """The control channel with one peer: handshake, auth, push, renegotiation, exit."""

    def __init__(
        self, config: SessionConfig, now: float, rng: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.config = config
        self.role = config.role
        self._rng = rng
        self.session_id = rng(SESSION_ID_LEN)
        self.remote_session_id: bytes | None = None
        self.state = State.HANDSHAKE
        self.peer_info: dict[str, str] = {}
        self.common_name: str | None = None
        self.username: str | None = None
        self.negotiated_cipher: str | None = None
        self.peer_id: int | None = config.peer_id if config.role == SessionRole.SERVER else None
        self.use_ekm = False
        self.peer_cc_exit = False
        self.remote_options: str | None = None
        self.tls_crypt_v2_metadata: tuple[int, bytes] | None = None
        self.stats: dict[str, int] = {}
        self._events: deque[Event] = deque()
        self._wrapper: Wrapper = config.wrapper_factory()
        self._next_key_id = 0
        self._lame: _KeyState | None = None
        self._push_requested = False
        self._push_request_at: float | None = None  # client: next PUSH_REQUEST
        self._push_deadline: float | None = None
        self._push_sent_until = 0.0
        self._push_parts = PushReplyAssembler()
        self._splitter = MessageSplitter()
        self._close_at: float | None = None
        self._linger = False
        self.auth_token: str | None = None  # client: pushed auth-token, used on renegotiation
        self._reneg_seconds = config.reneg_seconds
        if config.role == SessionRole.SERVER and config.reneg_seconds:
            # init.c: a server takes up to 10 % off reneg-sec so its clients do not align.
            span = max(int(config.reneg_seconds) // 10, 1)
            self._reneg_seconds = config.reneg_seconds - int.from_bytes(rng(4), "big") % span
        self.last_drop_reason = ""
        self._now = now
        if self.role.tls_server:
            self._primary: _KeyState | None = None  # created by the client's reset
        else:
            first = Opcode.HARD_RESET_CLIENT_V2
            if isinstance(self._wrapper, TLSCryptV2Client):
                first = Opcode.HARD_RESET_CLIENT_V3
            self._primary = self._new_key_state(first, now)

    # ------------------------------------------------------------------ API

    @property
    def key_id(self) -> int | None:
        return self._primary.key_id if self._primary else None

    @property
    def is_closed(self) -> bool:
        return self.state in (State.CLOSED, State.FAILED)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Feed one control packet from the peer; bad packets are counted and dropped."""
        self._now = now
        if self.is_closed:
            return
        try:
            self._receive(bytes(data), now)
        except ProtocolError as exc:
            self._drop(type(exc).__name__, str(exc))
            return
        self._process(now)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Control packets due now (new, retransmitted, or bare ACKs)."""
        self._now = now
        if self.state in (State.CLOSED, State.FAILED) or self._primary is None:
            return []
        self._process(now)
        ks = self._primary
        if ks is None:
            return []
        wrapper = self._wrapper
        assert not isinstance(wrapper, TLSCryptV2Server)
        out = [wrapper.wrap(encode_control(p), now) for p in ks.rel.packets_to_send(now)]
        self._check_closing(now)
        return out

    def get_timer(self) -> float | None:
        """When handle_timer() must run next (monotonic seconds), or None."""
        if self.is_closed:
            return None
        times: list[float] = []
        ks = self._primary
        if ks is not None:
            if (t := ks.rel.next_timeout()) is not None:
                times.append(t)
            if ks.state < KS.ACTIVE:
                times.append(ks.must_negotiate)
            if self.role == SessionRole.SERVER and ks.authenticated is None:
                times.append(ks.auth_deadline)
            if ks.established is not None and self._reneg_seconds:
                times.append(ks.established + self._reneg_seconds)
        if self._lame is not None and self._lame.must_die is not None:
            times.append(self._lame.must_die)
        for t in (self._push_request_at, self._push_deadline, self._close_at):
            if t is not None:
                times.append(t)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        if not self.is_closed:
            self._process(now)

    def accept_auth(self) -> None:
        """Server: the client in the last AuthRequest may connect."""
        ks = self._primary
        if ks is None or ks.authenticated is not None or ks.remote_km is None:
            raise ProtocolError("no authentication pending")
        ks.authenticated = True
        self._process(self._now)

    def reject_auth(self, reason: str | None = None) -> None:
        """Server: refuse the client; it gets AUTH_FAILED[,reason] and the session ends."""
        if self._primary is not None:
            self._primary.authenticated = False
        self._fail_auth(reason)

    def send_push_reply(self, options: list[str]) -> None:
        """Server: send PUSH_REPLY with `options` plus peer-id, cipher and protocol flags."""
        if self.state != State.ESTABLISHED or not self.role == SessionRole.SERVER:
            raise ProtocolError("push reply before the client is authenticated")
        for message in build_push_reply(options + self._negotiated_push_options()):
            self.send_control_message(message)
        self._push_sent_until = self._now + PUSH_REPLY_HOLDOFF

    def send_control_message(self, text: str) -> None:
        """Queue one NUL-terminated text message on the control channel."""
        ks = self._primary
        if ks is None:
            raise ProtocolError("no control channel yet")
        ks.tls.write_plaintext(encode_message(text))

    def renegotiate(self, now: float) -> None:
        """Start a soft reset (new key-id), e.g. when the data plane nears packet-id exhaustion."""
        self._now = now
        ks = self._primary
        if ks is not None and ks.state >= KS.GENERATED_KEYS and not self.is_closed:
            self._soft_reset(now)
            self._process(now)

    def add_data_traffic(self, n_bytes: int, n_packets: int, now: float) -> None:
        """Count data-channel traffic on the primary key; renegotiates at reneg-bytes/-pkts."""
        ks = self._primary
        if ks is None:
            return
        ks.n_bytes += n_bytes
        ks.n_packets += n_packets
        cfg = self.config
        if (cfg.reneg_bytes and ks.n_bytes >= cfg.reneg_bytes) or (
            cfg.reneg_packets and ks.n_packets >= cfg.reneg_packets
        ):
            self.renegotiate(now)

    def close(self, now: float) -> None:
        """Say goodbye: EXIT on the control channel if the peer understands it."""
        self._now = now
        if self.is_closed or self.state == State.CLOSING:
            return
        if self.peer_cc_exit and self._primary is not None and self._primary.state >= KS.ACTIVE:
            self.send_control_message("EXIT")
            self.state = State.CLOSING
            self._close_at = now + EXIT_LINGER
        else:
            self._closed("closed")

    # ---------------------------------------------------------- receiving

    def _receive(self, data: bytes, now: float) -> None:
        opcode, key_id, sid = peek_header(data)
        if opcode in (Opcode.DATA_V1, Opcode.DATA_V2):
            raise ParseError("data packet on the control path")
        if self.remote_session_id is None:
            plain = self._first_packet(data, opcode, now)
        else:
            if sid != self.remote_session_id:
                raise ParseError("unknown session-id")
            plain = self._unwrap(data, now)
        packet = decode_control(plain)
        ks = self._primary
        assert ks is not None
        if opcode == Opcode.SOFT_RESET_V1 and ks.state >= KS.GENERATED_KEYS:
            if key_id != self._next_key_id:
                raise ParseError(f"soft reset for key-id {key_id}, expected {self._next_key_id}")
            self._soft_reset(now)
            ks = self._primary
        if key_id != ks.key_id:
            raise ParseError(f"key-id {key_id} is not the active {ks.key_id}")
        ks.rel.receive(packet)

    def _first_packet(self, data: bytes, opcode: Opcode, now: float) -> bytes:
        if self.role.tls_server:
            if opcode not in CLIENT_RESET_OPCODES:
                raise ParseError(f"{opcode.name} before the client's reset")
            if isinstance(self._wrapper, TLSCryptV2Server):
                if opcode != Opcode.HARD_RESET_CLIENT_V3:
                    raise ParseError("tls-crypt-v2 server needs HARD_RESET_CLIENT_V3")
                wrapper, plain, metadata, mtype = self._wrapper.unwrap_client_reset(data, now)
                self._wrapper = wrapper
                self.tls_crypt_v2_metadata = (mtype, metadata)
            else:
                if opcode == Opcode.HARD_RESET_CLIENT_V3:
                    raise ParseError("HARD_RESET_CLIENT_V3 without tls-crypt-v2")
                plain = self._unwrap(data, now)
            packet = decode_control(plain)
            if packet.key_id != 0 or packet.acks:
                raise ParseError("client reset must be key-id 0 without acks")
            self.remote_session_id = data[1 : 1 + SESSION_ID_LEN]
            self._primary = self._new_key_state(Opcode.HARD_RESET_SERVER_V2, now)
        else:
            if opcode != Opcode.HARD_RESET_SERVER_V2:
                raise ParseError(f"{opcode.name} before the server's reset")
            plain = self._unwrap(data, now)
            self.remote_session_id = data[1 : 1 + SESSION_ID_LEN]
            assert self._primary is not None
            self._primary.rel.remote_session_id = self.remote_session_id
        return plain

    def _unwrap(self, data: bytes, now: float) -> bytes:
        wrapper = self._wrapper
        if isinstance(wrapper, TLSCryptV2Server):
            raise ParseError("tls-crypt-v2 client key not known yet")
        return wrapper.unwrap(data, now)

    def _drop(self, kind: str, reason: str) -> None:
        self.stats[kind] = self.stats.get(kind, 0) + 1
        self.stats["dropped"] = self.stats.get("dropped", 0) + 1
        self.last_drop_reason = reason

    # ------------------------------------------------------- key states

    def _new_key_state(self, initial_opcode: Opcode, now: float) -> _KeyState:
        key_id = self._next_key_id
        # key-id 0 is only ever the first key; then 1..7 cycle (ssl.c key_state_init).
        self._next_key_id = (key_id + 1) & KEY_ID_MASK or 1
        ks = _KeyState(
            key_id=key_id,
            tls=TLSConnection(self.config.tls, is_server=self.role.tls_server),
            rel=ReliableLayer(
                session_id=self.session_id,
                key_id=key_id,
                remote_session_id=self.remote_session_id,
                # tls-mtu counts the IP/UDP headers too (calc_control_channel_frame_overhead).
                tls_mtu=min(TLS_CHANNEL_BUF_SIZE, self.config.tls_mtu) - self.config.udp_overhead,
                wrap_overhead=getattr(self._wrapper, "overhead", 0),
                initial_timeout=self.config.tls_timeout,
            ),
            initial_opcode=initial_opcode,
            state=KS.PRE_START,
            must_negotiate=now + self.config.hand_window,
            auth_deadline=now + self._auth_window(),
        )
        # session_move_pre_start: the reset (or soft reset) is message packet-id 0.
        ks.rel.queue(b"", initial_opcode)
        return ks

    def _auth_window(self) -> float:
        # ssl.c auth_deferred_expire_window: hand-window, or half of reneg-sec if shorter.
        window = self.config.hand_window
        if self._reneg_seconds:
            window = min(window, self._reneg_seconds / 2)
        return window

    def _soft_reset(self, now: float) -> None:
        """key_state_soft_reset: the primary key becomes the lame duck, a new key starts."""
        old = self._primary
        assert old is not None
        if self._lame is not None:
            self._events.append(KeyRetired(self._lame.key_id))
        old.must_die = now + self.config.tran_window
        self._lame = old
        self._primary = self._new_key_state(Opcode.SOFT_RESET_V1, now)

    def _process(self, now: float) -> None:
        """Advance every state machine as far as it goes (tls_process / tls_multi_process)."""
        try:
            self._expire(now)
            ks = self._primary
            if ks is None or self.is_closed:
                return
            if ks.state != KS.ERROR:
                while self._process_key_state(ks, now):
                    pass
            self._after_key_state(ks, now)
            self._check_closing(now)
        except ProtocolError as exc:
            self._key_failed(str(exc))

    def _expire(self, now: float) -> None:
        lame = self._lame
        if lame is not None and lame.must_die is not None and now >= lame.must_die:
            self._lame = None
            self._events.append(KeyRetired(lame.key_id))
        ks = self._primary
        if ks is None:
            return
        if ks.state < KS.ACTIVE and now >= ks.must_negotiate:
            raise TLSError(
                f"TLS key negotiation failed within {self.config.hand_window:g} seconds"
            )
        if (
            self.role == SessionRole.SERVER
            and ks.remote_km is not None
            and ks.authenticated is None
            and now >= ks.auth_deadline
        ):
            ks.authenticated = False  # a deferred decision that never came
            self._fail_auth(None)
        reneg = self._reneg_seconds
        if (
            ks.state >= KS.GENERATED_KEYS
            and reneg
            and ks.established is not None
            and now >= ks.established + reneg
            and self.state == State.ESTABLISHED
        ):
            self._soft_reset(now)

    def _process_key_state(self, ks: _KeyState, now: float) -> bool:
        """One pass of ssl.c tls_process_state; True if anything changed."""
        changed = False
        server = self.role.tls_server
        if ks.state == KS.PRE_START and ks.rel.idle:
            ks.state = KS.START
            changed = True
        if ks.state == (KS.SENT_KEY if server else KS.GOT_KEY) and ks.rel.idle:
            self._move_active(ks, now)
            changed = True
        for packet in ks.rel.received():
            if packet.opcode in RESET_OPCODES or packet.opcode == Opcode.SOFT_RESET_V1:
                self._early_negotiation(packet.payload)
            else:
                ks.tls.receive(packet.payload)
            changed = True
        if ks.state >= KS.START:
            ks.plaintext_in.extend(ks.tls.read_records())
        if ks.state == (KS.GOT_KEY if server else KS.START) and ks.local_km is None:
            ks.local_km = self._local_key_method(ks)
            ks.tls.write_plaintext(ks.local_km.encode())
            ks.state = KS.SENT_KEY
            changed = True
        if ks.plaintext_in and ks.state == (KS.START if server else KS.SENT_KEY):
            self._read_key_method(ks, ks.plaintext_in.popleft())
            ks.state = KS.GOT_KEY
            changed = True
        if ks.state >= KS.ACTIVE:
            while ks.plaintext_in:
                self._control_records(ks.plaintext_in.popleft(), now)
                changed = True
        if ks.state >= KS.START:
            changed |= self._queue_ciphertext(ks)
        return changed

    def _early_negotiation(self, payload: bytes) -> None:
        # The peer's reset (packet-id 0) carries TLVs, not TLS (ssl.c parse_early_negotiation).
        if payload and isinstance(self._wrapper, TLSCryptV2Client):
            self._wrapper.note_server_reset(payload)

    def _queue_ciphertext(self, ks: _KeyState) -> bool:
        """TLS records into reliable packets (write_outgoing_tls_ciphertext)."""
        data = ks.tls.data_to_send()
        if not data:
            return False
        wrapper = self._wrapper
        if isinstance(wrapper, TLSCryptV2Client):
            # Only the packet numbered 1 may need it; that is the first TLS flight.
            opcode = wrapper.control_opcode(ks.rel.next_send_id if ks.rel.idle else -1)
            if opcode == Opcode.CONTROL_WKC_V1:
                # The WKc rides on this packet, so it carries that much less TLS.
                first = max(16, ks.rel.max_payload - len(wrapper.wkc))
                ks.rel.queue(data[:first], opcode)
                data = data[first:]
        if data:
            ks.rel.queue(data)
        return True

    def _move_active(self, ks: _KeyState, now: float) -> None:
        ks.state = KS.ACTIVE
        ks.established = now
        if ks.key_id == 0:
            cert = ks.tls.peer_certificate
            self.common_name = cert.common_name if cert else None
            self._events.append(SessionEstablished(self.common_name, dict(self.peer_info)))
            if self.role == SessionRole.CLIENT:
                self.state = State.AUTHENTICATING
                self._push_request_at = now  # check_connection_established: right away
                self._push_deadline = now + self.config.hand_window
            elif self.role == SessionRole.SERVER:
                self.state = State.AUTHENTICATING
            else:
                self._p2p_negotiate(ks)

    def _after_key_state(self, ks: _KeyState, now: float) -> None:
        """Steps tls_multi_process and the main loop take once a key went active."""
        if ks.state == KS.ACTIVE:
            ready = False
            if ks.key_id != 0:
                ready = self.state in (State.ESTABLISHED, State.CLOSING) and self._reauthed(ks)
            elif self.role == SessionRole.SERVER:
                ready = ks.authenticated is True
                if ks.authenticated is True and self.state == State.AUTHENTICATING:
                    self._server_connect()
            elif self.role.p2p:
                ready = True
            if ready and self.state != State.FAILED:
                self._generate_keys(ks)
                if ks.key_id == 0 and self.role.p2p:
                    self.state = State.ESTABLISHED
        if self.role == SessionRole.CLIENT and self._push_request_at is not None:
            if self._push_deadline is not None and now >= self._push_deadline:
                raise TLSError("no reply from server to push requests")
            if now >= self._push_request_at:
                self.send_control_message("PUSH_REQUEST")
                self._push_request_at = now + PUSH_REQUEST_INTERVAL
                self._queue_ciphertext(ks)
        if (self.role == SessionRole.SERVER and self._push_requested
                and self.state == State.ESTABLISHED):
            self._push_requested = False
            if now >= self._push_sent_until:
                self._events.append(PushRequestReceived())

    def _reauthed(self, ks: _KeyState) -> bool:
        return ks.authenticated is True if self.role == SessionRole.SERVER else True

    # --------------------------------------------------- key method 2

    def _local_key_method(self, ks: _KeyState) -> KeyMethod2:
        cfg = self.config
        if self.role == SessionRole.SERVER:
            peer_info = ""  # push_peer_info_detail 0
        else:
            info = client_peer_info(
                cfg.data_ciphers, pull=self.role == SessionRole.CLIENT, tun_mtu=cfg.tun_mtu
            )
            if not cfg.allow_ekm:
                bits = IVProto(int(info["IV_PROTO"])) & ~IVProto.TLS_KEY_EXPORT
                info["IV_PROTO"] = str(int(bits))
            info.update(cfg.peer_info_extra)
            peer_info = "".join(f"{k}={v}\n" for k, v in info.items())
        options = cfg.options_string or options_string(
            self.role.tls_server,
            cipher=cfg.data_ciphers_fallback,
            tun_mtu=cfg.tun_mtu,
            tls_auth=isinstance(self._wrapper, TLSAuth),
        )
        username = password = ""
        if self.role == SessionRole.CLIENT and (cfg.username is not None or self.auth_token):
            # A pushed auth-token replaces the password from then on (ssl.c key_method_2_write).
            username = cfg.username or ""
            password = self.auth_token or cfg.password or ""
        return KeyMethod2.generate(
            is_server=self.role.tls_server,
            options=options,
            username=username,
            password=password,
            peer_info=peer_info,
            rng=self._rng,
        )

    def _read_key_method(self, ks: _KeyState, data: bytes) -> None:
        km = KeyMethod2.decode(data, is_server_message=not self.role.tls_server)
        ks.remote_km = km
        if ks.key_id == 0:
            self.remote_options = km.options
            if self.role != SessionRole.SERVER or km.peer_info:
                self.peer_info = parse_peer_info(km.peer_info)
        if self.role != SessionRole.SERVER:
            ks.authenticated = True
            return
        cert = ks.tls.peer_certificate
        cn = cert.common_name if cert else None
        if ks.key_id == 0:
            self.username = km.username or None
            self.peer_cc_exit = IVProto.CC_EXIT_NOTIFY in iv_proto(self.peer_info)
        elif not self.config.reauth_on_renegotiation:
            # Renegotiation keeps the identity locked at connect time (tls_lock_common_name).
            same = cn == self.common_name and (km.username or None) == self.username
            ks.authenticated = same
            if not same:
                self._fail_auth("identity changed on renegotiation")
            return
        self._events.append(
            AuthRequest(
                common_name=cn,
                username=km.username or None,
                password=km.password or None,
                peer_info=dict(self.peer_info),
                key_id=ks.key_id,
                chain=ks.tls.peer_chain_der(),
            )
        )

    # ------------------------------------------------ negotiation + keys

    def _server_connect(self) -> None:
        """multi_client_set_protocol_options + key generation for the first key."""
        bits = iv_proto(self.peer_info)
        if IVProto.DATA_V2 not in bits:
            self._fail_auth("Data channel negotiation failed (missing DATA_V2)")
            return
        try:
            self.negotiated_cipher = select_server_cipher(
                self.config.data_ciphers,
                self.peer_info,
                _remote_cipher(self.remote_options),
                self.config.data_ciphers_fallback,
            )
        except NegotiationError as exc:
            self._fail_auth(f"Data channel cipher negotiation failed ({exc})")
            return
        self.use_ekm = self.config.allow_ekm and IVProto.TLS_KEY_EXPORT in bits
        self.peer_cc_exit = IVProto.CC_EXIT_NOTIFY in bits
        if IVProto.REQUEST_PUSH in bits:
            self._push_requested = True
        self.state = State.ESTABLISHED

    def _negotiated_push_options(self) -> list[str]:
        """Per-client options prepare_push_reply adds after the configured ones."""
        opts = [f"peer-id {self.peer_id}"]
        if peer_supports_ncp(self.peer_info):
            opts.append(f"cipher {self.negotiated_cipher}")
        flags = ""
        if self.peer_cc_exit:
            flags += " cc-exit"
            if self.use_ekm:
                flags += " tls-ekm"
        elif self.use_ekm:
            opts.append("key-derivation tls-ekm")
        if flags:
            opts.append("protocol-flags" + flags)
        if "IV_MTU" in self.peer_info:
            opts.append(f"tun-mtu {self.config.tun_mtu}")
        return opts

    def _p2p_negotiate(self, ks: _KeyState) -> None:
        bits = iv_proto(self.peer_info)
        export = None
        if self.config.allow_ekm and IVProto.TLS_KEY_EXPORT in bits:
            export = ks.tls.export_keying_material(EKM_P2P_PEER_ID_LABEL, EKM_P2P_PEER_ID_LEN)
        params = negotiate_p2p(
            self.config.data_ciphers,
            self.peer_info,
            self.role.tls_server,
            self.config.data_ciphers_fallback,
            export_peer_id=export,
            local_ekm=self.config.allow_ekm,
        )
        self.negotiated_cipher = params.cipher
        self.peer_id = params.peer_id
        self.use_ekm = params.use_ekm
        self.peer_cc_exit = params.cc_exit

    def _client_pushed(self, options: list[str]) -> None:
        """do_deferred_options for a pulling client: cipher, peer-id, key derivation."""
        cipher: str | None = None
        peer_id: int | None = None
        for opt in options:
            words = opt.split()
            if not words:
                continue
            if words[0] == "cipher" and len(words) == 2:
                cipher = words[1]
            elif words[0] == "peer-id" and len(words) == 2 and words[1].isdigit():
                peer_id = int(words[1])
            elif words[0] == "key-derivation" and words[1:] == ["tls-ekm"]:
                self.use_ekm = self.config.allow_ekm
            elif words[0] == "protocol-flags":
                if epoch_format_pushed(words[1:]):
                    # We never offer IV_PROTO_DATA_EPOCH (the data plane lacks it): a server
                    # that turns it on anyway would get packets it cannot read.
                    raise NegotiationError("server pushed the epoch data format, not offered")
                if "tls-ekm" in words[1:]:
                    self.use_ekm = self.config.allow_ekm
                if "cc-exit" in words[1:]:
                    self.peer_cc_exit = True
        if cipher is not None:
            self.negotiated_cipher = check_pushed_cipher(
                cipher, self.config.data_ciphers, self.config.data_ciphers_fallback
            )
        else:
            self.negotiated_cipher = client_cipher_without_push(
                _remote_cipher(self.remote_options),
                self.config.data_ciphers,
                self.config.data_ciphers_fallback,
            )
        if peer_id is None:
            raise NegotiationError("server pushed no peer-id (DATA_V1 is not supported)")
        self.peer_id = peer_id
        self._events.append(PushReplyReceived(list(options)))
        self.state = State.ESTABLISHED
        assert self._primary is not None
        self._generate_keys(self._primary)

    def _generate_keys(self, ks: _KeyState) -> None:
        """tls_session_generate_data_channel_keys: EKM or the TLS 1.0 PRF, then KeysReady."""
        if ks.state >= KS.GENERATED_KEYS:
            return
        cipher = self.negotiated_cipher
        assert cipher is not None and self.peer_id is not None
        if self.use_ekm:
            key2 = ks.tls.export_keying_material(TLS_EKM_LABEL, KEY2_LEN)
        else:
            key2 = self._prf_key2(ks)
        ks.keys = split_key2(key2, cipher, is_server=self.role.tls_server)
        ks.state = KS.GENERATED_KEYS
        ks.established = ks.established or self._now
        self._events.append(
            KeysReady(
                key_id=ks.key_id,
                cipher=cipher,
                peer_id=self.peer_id,
                encrypt_key=ks.keys.encrypt_key,
                encrypt_nonce_tail=ks.keys.encrypt_nonce_tail,
                decrypt_key=ks.keys.decrypt_key,
                decrypt_nonce_tail=ks.keys.decrypt_nonce_tail,
                ekm=self.use_ekm,
            )
        )

    def _prf_key2(self, ks: _KeyState) -> bytes:
        local, remote = ks.local_km, ks.remote_km
        assert local is not None and remote is not None and self.remote_session_id
        client, server = (remote, local) if self.role.tls_server else (local, remote)
        client_sid, server_sid = (
            (self.remote_session_id, self.session_id)
            if self.role.tls_server
            else (self.session_id, self.remote_session_id)
        )
        assert client.pre_master is not None
        return prf_key_expansion(
            client.pre_master,
            client.random1,
            server.random1,
            client.random2,
            server.random2,
            client_sid,
            server_sid,
        )

    # ------------------------------------------------ control messages

    def _control_records(self, record: bytes, now: float) -> None:
        # A record may hold several NUL-terminated commands (forward.c extract_command_buffer).
        for text in self._splitter.feed(record):
            self._control_message(text, now)

    def _control_message(self, text: str, now: float) -> None:
        """forward.c parse_incoming_control_channel_command, for both roles."""
        msg = parse_control_message(text)
        client = self.role == SessionRole.CLIENT
        if isinstance(msg, push.AuthFailed):
            if client:
                self._events.append(AuthFailed(msg.reason, temporary=msg.temporary))
                self._closed("auth-failure", failed=True)
        elif isinstance(msg, push.PushRequest):
            if self.role == SessionRole.SERVER:
                if self._primary is not None and self._primary.authenticated is False:
                    self._fail_auth(None)
                else:
                    self._push_requested = True
        elif isinstance(msg, push.PushReply):
            if client:
                self._push_reply(text, msg.options)
        elif isinstance(msg, push.Restart):
            if client:
                self._events.append(RestartRequested(msg.message, halt=msg.halt))
        elif isinstance(msg, push.AuthPending):
            if msg.timeout is not None and self._push_deadline is not None:
                # push.c receive_auth_pending: the server gets that long to decide.
                self._push_deadline = now + msg.timeout
            self._events.append(AuthPending(msg.timeout, text))
        elif isinstance(msg, push.Exit):
            self._events.append(PeerExit("remote-exit"))
            self.state = State.CLOSING
            self._linger = True
            self._close_at = now + EXIT_LINGER
        else:
            self._events.append(ControlMessageReceived(text))

    def _push_reply(self, text: str, options: list[str]) -> None:
        self._take_auth_token(options)
        if self.state == State.AUTHENTICATING:
            complete = self._push_parts.feed(text)
            if complete is not None:
                self._push_request_at = self._push_deadline = None
                self._client_pushed(complete)
        elif self.state == State.ESTABLISHED:
            # A later push only refreshes the auth-token (push.c send_push_reply_auth_token).
            self._events.append(PushReplyReceived(options))

    def _take_auth_token(self, options: list[str]) -> None:
        for opt in options:
            words = opt.split()
            if len(words) == 2 and words[0] == "auth-token":
                self.auth_token = words[1]

    # ------------------------------------------------------- endings

    def _fail_auth(self, reason: str | None) -> None:
        """Server: send AUTH_FAILED and close once it is delivered (push.c send_auth_failed)."""
        if self.state in (State.CLOSING, State.CLOSED, State.FAILED):
            return
        self.send_control_message(build_auth_failed(reason))
        self.state = State.CLOSING
        self._close_at = self._now + EXIT_LINGER

    def _check_closing(self, now: float) -> None:
        if self.state != State.CLOSING:
            return
        ks = self._primary
        # Our own final message: done once acked. The peer's EXIT: linger so its
        # retransmissions still get acked (push.c receive_exit_message).
        delivered = not self._linger and ks is not None and ks.rel.idle
        if delivered or (self._close_at is not None and now >= self._close_at):
            self._closed("exit")

    def _key_failed(self, reason: str) -> None:
        ks = self._primary
        key_id = ks.key_id if ks else 0
        if ks is not None:
            ks.state = KS.ERROR
        self._events.append(HandshakeFailed(reason, key_id=key_id, fatal=True))
        self._closed(reason, failed=True)

    def _closed(self, reason: str, failed: bool = False) -> None:
        if self.is_closed:
            return
        self.state = State.FAILED if failed else State.CLOSED
        self._close_at = self._push_request_at = self._push_deadline = None
        self._events.append(SessionClosed(reason))


# ------------------------------------------------------------------ helpers


def _remote_cipher(options: str | None) -> str | None:
    if not options:
        return None
    cipher = _options_extract(options, "cipher")
    return None if cipher in (None, "[null-cipher]", "BF-CBC") else cipher
