"""Key method 2: the first plaintext message each side sends inside TLS (ssl.c: key_method_2_write).

    u32 0, u8 key-method (2),
    client: pre_master[48] random1[32] random2[32]    server: random1[32] random2[32]
    options, username, password, peer_info: u16 length (NUL included) + bytes + NUL

An absent string is a bare u16 0. Readers (key_method_2_read) tolerate a message
that ends after the options string, as very old peers send no more.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .constants import KEY_METHOD_2
from .errors import ParseError
from .keys import PRE_MASTER_LEN, RANDOM_LEN

KEY_METHOD_MASK = 0x0F  # the high nibble once carried flags (ssl.h)
TLS_OPTIONS_LEN = 512  # the reader's options buffer, NUL included (ssl.h)
_HEAD = struct.Struct("!IB")
_U16 = struct.Struct("!H")


@dataclass(frozen=True)
class KeyMethod2:
    """One side's key method 2 message. `pre_master` is None in the server's message."""

    pre_master: bytes | None
    random1: bytes
    random2: bytes
    options: str
    username: str = ""
    password: str = ""
    peer_info: str = ""

    @classmethod
    def generate(
        cls,
        is_server: bool,
        options: str,
        username: str = "",
        password: str = "",
        peer_info: str = "",
        rng: Callable[[int], bytes] = os.urandom,
    ) -> KeyMethod2:
        """Fresh key source material for this side (key_source2_randomize_write)."""
        pre_master = None if is_server else rng(PRE_MASTER_LEN)
        return cls(
            pre_master, rng(RANDOM_LEN), rng(RANDOM_LEN), options, username, password, peer_info
        )

    def encode(self) -> bytes:
        if self.pre_master is not None and len(self.pre_master) != PRE_MASTER_LEN:
            raise ValueError(f"pre_master must be {PRE_MASTER_LEN} bytes")
        if len(self.random1) != RANDOM_LEN or len(self.random2) != RANDOM_LEN:
            raise ValueError(f"random1/random2 must be {RANDOM_LEN} bytes")
        out = bytearray(_HEAD.pack(0, KEY_METHOD_2))
        if self.pre_master is not None:
            out += self.pre_master
        out += self.random1 + self.random2
        options = self.options.encode()
        if len(options) + 1 > TLS_OPTIONS_LEN:
            raise ValueError(f"options string longer than {TLS_OPTIONS_LEN - 1} bytes")
        for text in (
            options,
            self.username.encode(),
            self.password.encode(),
            self.peer_info.encode(),
        ):
            out += _encode_string(text)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes, is_server_message: bool) -> KeyMethod2:
        """Parse the peer's message; `is_server_message` says whether the sender is the server."""
        reader = _Reader(data)
        _, method = reader.unpack(_HEAD, "header")
        if method & KEY_METHOD_MASK != KEY_METHOD_2:
            raise ParseError(f"unsupported key method {method & KEY_METHOD_MASK}")
        pre_master = None if is_server_message else reader.take(PRE_MASTER_LEN, "pre_master")
        random1 = reader.take(RANDOM_LEN, "random1")
        random2 = reader.take(RANDOM_LEN, "random2")
        options = reader.string("options")
        if len(options) + 1 > TLS_OPTIONS_LEN:
            raise ParseError("options string too long")
        username = reader.string("username", optional=True)
        password = reader.string("password", optional=True)
        peer_info = reader.string("peer-info", optional=True)
        return cls(pre_master, random1, random2, options, username, password, peer_info)


def _encode_string(text: bytes) -> bytes:
    if not text:
        return _U16.pack(0)
    if b"\0" in text:
        raise ValueError("string contains a NUL byte")
    if len(text) + 1 > 0xFFFF:
        raise ValueError("string too long for a u16 length")
    return _U16.pack(len(text) + 1) + text + b"\0"


class _Reader:
    """Bounds-checked cursor: every short read is a ParseError naming the field."""

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    def take(self, n: int, what: str) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise ParseError(f"key method 2: truncated {what}")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size, what))

    def string(self, what: str, optional: bool = False) -> str:
        """A u16-prefixed NUL-terminated string; "" if empty, or if optional and at the end."""
        if optional and self._pos == len(self._data):
            return ""
        (length,) = self.unpack(_U16, what)
        if length == 0:
            return ""
        raw = self.take(length, what)
        # C semantics: the last byte is forced to NUL and the text stops at the first NUL.
        text = raw[: length - 1].split(b"\0", 1)[0]
        return text.decode("utf-8", errors="replace")
