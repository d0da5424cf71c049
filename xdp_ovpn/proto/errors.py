"""Typed protocol errors: every parser raises one of these, never IndexError."""


class ProtocolError(Exception):
    """Base class: a short, human-readable reason."""


class ParseError(ProtocolError):
    """Bytes that do not form a valid packet or message."""


class AuthError(ProtocolError):
    """A packet failed authentication (HMAC, AEAD tag, tls-crypt tag)."""


class ReplayError(ProtocolError):
    """A packet-id was already seen, or fell outside the replay window."""


class KeyError_(ProtocolError):
    """No usable key for a packet (unknown key-id, missing slot)."""


class PacketIdExhausted(KeyError_):
    """A key's sender used up its packet-ids (or epochs): the key must be renegotiated.

    A KeyError_ to its callers and in the drop counters (`drop_reason`): the packet could
    not be sealed with this key, and both engines count it so (dataplane/engine.py)."""


class TLSError(ProtocolError):
    """The TLS handshake or certificate verification failed."""


class NegotiationError(ProtocolError):
    """The peers could not agree (cipher, key method, options)."""


def drop_reason(exc: ProtocolError) -> str:
    """The drop counter a packet refused with `exc` goes to: its error's class name, an
    exhausted sender counted as the KeyError_ it is."""
    return KeyError_.__name__ if isinstance(exc, PacketIdExhausted) else type(exc).__name__
