"""Typed events a Session hands to its driver (the control plane), aioquic style."""

from __future__ import annotations

from dataclasses import dataclass, field


class Event:
    """Base class of every session event."""


@dataclass(frozen=True)
class KeysReady(Event):
    """Data-channel keys for `key_id` are ready: install them (DCO `new_key`).

    `peer_id` is what goes into outgoing DATA_V2 headers (and what the peer
    puts in its own). Nonce tails are the 8-byte implicit IVs.

    With `epoch` the keys are in 2.7's epoch data format: encrypt_key and decrypt_key are
    then the 32-byte first epoch secrets (E_1) of the send and receive chains (the data
    plane derives each epoch's key and IV from them, epochkeys.py) and the nonce tails are
    empty.
    """

    key_id: int
    cipher: str
    peer_id: int
    encrypt_key: bytes = field(repr=False)
    encrypt_nonce_tail: bytes = field(repr=False)
    decrypt_key: bytes = field(repr=False)
    decrypt_nonce_tail: bytes = field(repr=False)
    # EKM (tls-ekm) or the legacy TLS 1.0 PRF derived these keys.
    ekm: bool = False
    epoch: bool = False


@dataclass(frozen=True)
class KeyRetired(Event):
    """The lame-duck key `key_id` expired: remove it (DCO `del_key`)."""

    key_id: int


@dataclass(frozen=True)
class AuthRequest(Event):
    """Server: a client finished key method 2; answer with accept_auth()/reject_auth().

    Raised again on renegotiation (`key_id` > 0), like openvpn's re-auth.
    """

    common_name: str | None
    username: str | None
    password: str | None = field(repr=False)
    peer_info: dict[str, str]
    key_id: int = 0
    # The client's verified certificate chain, DER, depth 0 first (tls-verify, X509_* env).
    chain: tuple[bytes, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class PushRequestReceived(Event):
    """Server: the client wants its PUSH_REPLY (or announced IV_PROTO_REQUEST_PUSH)."""


@dataclass(frozen=True)
class PushReplyReceived(Event):
    """Client: the complete (reassembled) PUSH_REPLY options."""

    options: list[str]


@dataclass(frozen=True)
class ControlMessageReceived(Event):
    """A control-channel text message the session does not act on itself (INFO, ...)."""

    text: str


@dataclass(frozen=True)
class AuthFailed(Event):
    """Client: the server sent AUTH_FAILED[,reason]. `temporary` for AUTH_FAILED,TEMP."""

    reason: str
    temporary: bool = False


@dataclass(frozen=True)
class AuthPending(Event):
    """Client: the server deferred authentication (AUTH_PENDING[,timeout N])."""

    timeout: int | None
    text: str = ""


@dataclass(frozen=True)
class RestartRequested(Event):
    """The peer asked us to reconnect (RESTART[,msg]) or stop (HALT[,msg], `halt`)."""

    reason: str
    halt: bool = False


@dataclass(frozen=True)
class PeerExit(Event):
    """The peer announced it is going away (control-channel EXIT, cc-exit)."""

    reason: str


@dataclass(frozen=True)
class HandshakeFailed(Event):
    """A key negotiation failed (TLS, verification, timeout); `fatal` ends the session."""

    reason: str
    key_id: int = 0
    fatal: bool = True


@dataclass(frozen=True)
class SessionEstablished(Event):
    """The first key negotiation completed (openvpn's S_ACTIVE for key-id 0)."""

    common_name: str | None
    peer_info: dict[str, str]


@dataclass(frozen=True)
class SessionClosed(Event):
    """The session is over; the driver can forget it (and its peer-id)."""

    reason: str
