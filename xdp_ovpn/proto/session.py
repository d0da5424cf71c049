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

Session is this module's API, receiving, control messages and endings, plus two parts of
its own in their modules: the key states (keystate.py) and the data-channel negotiation
and key derivation (negotiation.py); role, State and shared timings are sessionstate.py's.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import push
from .constants import (
    DEFAULT_DATA_CIPHERS,
    DEFAULT_TLS_MTU,
    SESSION_ID_LEN,
    Opcode,
)
from .errors import ParseError, ProtocolError
from .events import (
    AuthFailed,
    AuthPending,
    ControlMessageReceived,
    Event,
    HandshakeFailed,
    PeerExit,
    PushReplyReceived,
    RestartRequested,
    SessionClosed,
)
from .keystate import KS, KeyState, KeyStateMachine
from .negotiation import Negotiation
from .packet import decode_control, encode_control
from .push import (
    MessageSplitter,
    PushReplyAssembler,
    build_auth_failed,
    build_push_reply,
    encode_message,
    parse_control_message,
)
from .sessionstate import (
    CLIENT_RESET_OPCODES,
    EXIT_LINGER,
    PUSH_REPLY_HOLDOFF,
    SessionRole,
    State,
)
from .tls import TLSConfig
from .tls_crypt_v2 import TLSCryptV2Client, TLSCryptV2Server
from .wrapping import ControlWrapper, NoWrap, peek_header

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
    # The data plane can do 2.7's epoch data format: offer it (IV_PROTO_DATA_EPOCH) and
    # use it with peers that offer it too. False: the 2.6 format only.
    epoch_data: bool = False
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


class Session(KeyStateMachine, Negotiation):
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
        self.use_epoch = False  # data keys in the epoch format (negotiation.py)
        self.peer_cc_exit = False
        self.remote_options: str | None = None
        self.tls_crypt_v2_metadata: tuple[int, bytes] | None = None
        self.stats: dict[str, int] = {}
        self._events: deque[Event] = deque()
        self._wrapper: Wrapper = config.wrapper_factory()
        self._next_key_id = 0
        self._lame: KeyState | None = None
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
            self._primary: KeyState | None = None  # created by the client's reset
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
