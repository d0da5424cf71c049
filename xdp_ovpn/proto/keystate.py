"""The key states of a session (openvpn 2.6 ssl.c tls_process_state): each key-id has a
TLS connection and a reliability layer, and goes S_PRE_START (own reset sent) -> S_START
(reset acked) -> S_SENT_KEY / S_GOT_KEY (key method 2 written / read) -> S_ACTIVE (own
messages acked) -> S_GENERATED_KEYS; a soft reset makes the primary key the lame duck.

`KeyStateMachine` is the part of `Session` (session.py) that runs them: its methods work
on the session's state and are only ever called through a Session."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from .constants import (
    KEY_ID_MASK,
    IVProto,
    Opcode,
)
from .errors import ProtocolError, TLSError
from .events import (
    AuthRequest,
    KeyRetired,
    PushRequestReceived,
    SessionEstablished,
)
from .keymethod2 import KeyMethod2
from .keys import (
    DirectionalKeys,
)
from .peerinfo import client_peer_info, iv_proto, options_string, parse_peer_info
from .push import (
    TLS_CHANNEL_BUF_SIZE,
)
from .reliable import ReliableLayer
from .sessionstate import PUSH_REQUEST_INTERVAL, RESET_OPCODES, SessionRole, State
from .tls import TLSConnection
from .tls_auth import TLSAuth
from .tls_crypt_v2 import TLSCryptV2Client


class KS(enum.IntEnum):
    """Key-state progress, named and ordered like openvpn's S_* constants."""

    PRE_START = 1
    START = 2
    SENT_KEY = 3
    GOT_KEY = 4
    ACTIVE = 5
    GENERATED_KEYS = 6
    ERROR = 7


@dataclass
class KeyState:
    """One key-id's handshake: its TLS connection, reliability layer, progress and keys."""

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


class KeyStateMachine:
    """Session's key states: created, advanced, retired (see the module docstring)."""

    # ------------------------------------------------------- key states

    def _new_key_state(self, initial_opcode: Opcode, now: float) -> KeyState:
        key_id = self._next_key_id
        # key-id 0 is only ever the first key; then 1..7 cycle (ssl.c key_state_init).
        self._next_key_id = (key_id + 1) & KEY_ID_MASK or 1
        ks = KeyState(
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

    def _process_key_state(self, ks: KeyState, now: float) -> bool:
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

    def _queue_ciphertext(self, ks: KeyState) -> bool:
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

    def _move_active(self, ks: KeyState, now: float) -> None:
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

    def _after_key_state(self, ks: KeyState, now: float) -> None:
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

    def _reauthed(self, ks: KeyState) -> bool:
        return ks.authenticated is True if self.role == SessionRole.SERVER else True

    # --------------------------------------------------- key method 2

    def _local_key_method(self, ks: KeyState) -> KeyMethod2:
        cfg = self.config
        if self.role == SessionRole.SERVER:
            peer_info = ""  # push_peer_info_detail 0
        else:
            info = client_peer_info(
                cfg.data_ciphers, pull=self.role == SessionRole.CLIENT, tun_mtu=cfg.tun_mtu,
                epoch=cfg.epoch_data,
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

    def _read_key_method(self, ks: KeyState, data: bytes) -> None:
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
