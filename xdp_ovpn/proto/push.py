"""Text messages on the control channel: PUSH_REQUEST/PUSH_REPLY and their kin (push.c).

On the wire each message is printable ASCII ending in a NUL; one TLS read may
hold several (ssl_pkt.c: extract_command_buffer). A PUSH_REPLY longer than a
push bundle is split into several messages, all but the last carrying
`push-continuation 2` and the last `push-continuation 1` (push.c:
send_push_options). Options are kept as raw option lines; words inside one are
split like a config line (config.split_line).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .errors import ParseError

PUSH_REQUEST = "PUSH_REQUEST"
PUSH_REPLY = "PUSH_REPLY"
PUSH_BUNDLE_SIZE = 1024  # common.h: buffer for one push message
# push.c send_push_reply: leave room for a trailing option and the continuation marker.
PUSH_SAFE_CAP = PUSH_BUNDLE_SIZE - 84
TLS_CHANNEL_BUF_SIZE = 2048  # common.h: what one control-channel read may hold
_CONTINUATION = "push-continuation"


# ------------------------------------------------------------- PUSH_REPLY


class PushReply(NamedTuple):
    """One PUSH_REPLY message: its options and whether continuation messages follow."""

    options: list[str]
    more: bool


def build_push_reply(options: list[str], cap: int = PUSH_SAFE_CAP) -> list[str]:
    """PUSH_REPLY messages carrying `options`, split so that each stays below `cap`.

    ValueError for an option that cannot be pushed (a comma, a control character,
    or too long for one message), as openvpn refuses such a push list.
    """
    messages: list[str] = []
    buf = PUSH_REPLY
    for opt in options:
        _check_printable(opt)
        if "," in opt:
            raise ValueError(f"push option contains a comma: {opt!r}")
        if len(buf) + len(opt) >= cap:
            if buf == PUSH_REPLY:
                raise ValueError(f"push option too long: {opt[:40]!r}...")
            messages.append(f"{buf},{_CONTINUATION} 2")
            buf = PUSH_REPLY
            if len(buf) + len(opt) >= cap:
                raise ValueError(f"push option too long: {opt[:40]!r}...")
        buf += "," + opt
    if messages:
        buf += f",{_CONTINUATION} 1"
    messages.append(buf)
    return messages


def parse_push_reply(text: str) -> PushReply:
    """Options of one PUSH_REPLY message (push.c: process_incoming_push_reply).

    Empty items are skipped like openvpn's parser does; `push-continuation 2` sets
    `more` and is not returned as an option.
    """
    if not text.startswith(PUSH_REPLY):
        raise ParseError("not a PUSH_REPLY")
    rest = text[len(PUSH_REPLY) :]
    if not rest:
        return PushReply([], False)
    if rest[0] != ",":
        raise ParseError("malformed PUSH_REPLY")
    options: list[str] = []
    more = False
    for item in rest[1:].split(","):
        opt = item.strip()
        if not opt:
            continue
        words = opt.split()
        if words[0] == _CONTINUATION:
            if len(words) != 2 or words[1] not in ("0", "1", "2"):
                raise ParseError(f"bad {_CONTINUATION}: {opt!r}")
            more = words[1] == "2"
        else:
            options.append(opt)
    return PushReply(options, more)


class PushReplyAssembler:
    """Collects PUSH_REPLY continuations into one option list."""

    def __init__(self) -> None:
        self._parts: list[str] = []

    def feed(self, text: str) -> list[str] | None:
        """Add one message; the complete option list once the last part arrived, else None."""
        reply = parse_push_reply(text)
        self._parts.extend(reply.options)
        if reply.more:
            return None
        options, self._parts = self._parts, []
        return options

    @property
    def pending(self) -> bool:
        return bool(self._parts)


# ------------------------------------------------------ message framing


def encode_message(text: str) -> bytes:
    """A control message as sent: printable ASCII plus the terminating NUL."""
    _check_printable(text)
    return text.encode("ascii") + b"\0"


def _check_printable(text: str) -> None:
    if not text.isascii() or not text.isprintable():
        raise ValueError(f"control messages are printable ASCII: {text[:40]!r}")


class MessageSplitter:
    """NUL-separated messages out of control-channel plaintext.

    A message cut between reads waits for its NUL (bounded by TLS_CHANNEL_BUF_SIZE).
    Messages with characters other than printable ASCII are dropped and counted, as
    openvpn drops them (string_check_buf with CC_PRINT); trailing CR/LF is removed.
    """

    def __init__(self, limit: int = TLS_CHANNEL_BUF_SIZE) -> None:
        self._pending = b""
        self._limit = limit
        self.dropped = 0

    def feed(self, data: bytes) -> list[str]:
        chunks = (self._pending + bytes(data)).split(b"\0")
        self._pending = chunks.pop()
        if len(self._pending) > self._limit:
            self._pending = b""
            self.dropped += 1
        out = []
        for raw in chunks:
            raw = raw.rstrip(b"\r\n")
            if not raw:
                continue
            if all(0x20 <= b < 0x7F for b in raw):
                out.append(raw.decode("ascii"))
            else:
                self.dropped += 1
        return out


# ------------------------------------------------------- other messages


@dataclass(frozen=True)
class PushRequest:
    pass


@dataclass(frozen=True)
class AuthFailed:
    """AUTH_FAILED[,reason]; a reason starting with TEMP is a temporary failure."""

    reason: str = ""

    @property
    def temporary(self) -> bool:
        return self.reason.startswith("TEMP")


@dataclass(frozen=True)
class Restart:
    """RESTART or HALT from the server, with an optional message.

    A message may start with flags in brackets: P keeps cached passwords, N moves
    on to the next server (push.c: server_pushed_signal).
    """

    halt: bool = False
    message: str = ""

    @property
    def flags(self) -> str:
        if self.message.startswith("[") and "]" in self.message:
            return self.message[1 : self.message.index("]")]
        return ""


@dataclass(frozen=True)
class Info:
    """INFO,text or INFO_PRE,text (the latter precedes AUTH_PENDING)."""

    text: str
    pre: bool = False


@dataclass(frozen=True)
class AuthPending:
    """AUTH_PENDING[,keywords]: `timeout` in seconds when the server gave one."""

    timeout: int | None = None
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class CrResponse:
    """CR_RESPONSE,base64 — a client's answer to a challenge."""

    response: str


@dataclass(frozen=True)
class Exit:
    """EXIT: the peer is going away (protocol-flags cc-exit)."""


@dataclass(frozen=True)
class UnknownMessage:
    text: str


ControlMessage = (
    PushRequest
    | PushReply
    | AuthFailed
    | Restart
    | Info
    | AuthPending
    | CrResponse
    | Exit
    | UnknownMessage
)


def _argument(text: str, keyword: str) -> str:
    """What follows "KEYWORD," ("" when there is no comma or nothing after it)."""
    rest = text[len(keyword) :]
    return rest[1:] if rest.startswith(",") else ""


def parse_control_message(text: str) -> ControlMessage:
    """Classify a message by its prefix, in the order openvpn checks them
    (forward.c: parse_incoming_control_channel_command)."""
    if text.startswith("AUTH_FAILED"):
        return AuthFailed(_argument(text, "AUTH_FAILED"))
    if text.startswith(PUSH_REQUEST):
        return PushRequest()
    if text.startswith(PUSH_REPLY):
        return parse_push_reply(text)
    if text.startswith("RESTART"):
        return Restart(False, _argument(text, "RESTART"))
    if text.startswith("HALT"):
        return Restart(True, _argument(text, "HALT"))
    if text.startswith("INFO_PRE"):
        return Info(_argument(text, "INFO_PRE"), pre=True)
    if text.startswith("INFO"):
        return Info(_argument(text, "INFO"))
    if text.startswith("CR_RESPONSE"):
        return CrResponse(_argument(text, "CR_RESPONSE"))
    if text.startswith("AUTH_PENDING"):
        return _parse_auth_pending(text)
    if text.startswith("EXIT"):
        return Exit()
    return UnknownMessage(text)


def _parse_auth_pending(text: str) -> AuthPending:
    keywords = tuple(k for k in _argument(text, "AUTH_PENDING").split(",") if k)
    timeout = None
    for word in keywords:
        name, _, value = word.partition(" ")
        if name == "timeout" and value.strip().isdigit():
            timeout = int(value)
    return AuthPending(timeout, keywords)


def build_auth_failed(reason: str | None = None) -> str:
    """AUTH_FAILED[,reason], cut to a push bundle like push.c: send_auth_failed."""
    text = "AUTH_FAILED" + (f",{reason}" if reason else "")
    return text[: PUSH_BUNDLE_SIZE - 1]


def build_restart(message: str | None = None, halt: bool = False) -> str:
    keyword = "HALT" if halt else "RESTART"
    return keyword + (f",{message}" if message else "")


def build_auth_pending(timeout: int | None = None) -> str:
    """AUTH_PENDING with a timeout keyword, for clients announcing IV_PROTO AUTH_PENDING_KW."""
    return "AUTH_PENDING" if timeout is None else f"AUTH_PENDING,timeout {timeout}"


def build_info(text: str, pre: bool = False) -> str:
    return ("INFO_PRE," if pre else "INFO,") + text


EXIT = "EXIT"
