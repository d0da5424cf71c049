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


class TLSError(ProtocolError):
    """The TLS handshake or certificate verification failed."""


class NegotiationError(ProtocolError):
    """The peers could not agree (cipher, key method, options)."""
