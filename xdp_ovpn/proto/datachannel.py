"""AEAD DATA_V2 encapsulation and decapsulation: the data plane's hot path (crypto.c: *_aead).

    [op|kid 1][peer-id 3][packet-id 4][tag 16][ciphertext n]
    AAD = the first 8 bytes; nonce = packet-id (4, BE) + the direction's 8-byte tail.

The tag sits before the ciphertext while the AEAD API wants ciphertext||tag, so
every path moves the tag. Two ways in:

- `encrypt_into` / `decrypt_into` take any buffers and copy through a reusable
  scratch buffer when they have to;
- `encrypt_frame` / `decrypt_frame` work in place in a writable frame (a UMEM
  chunk) with 16 spare bytes after the packet: decryption copies the tag behind
  the ciphertext and decrypts in place; encryption writes ciphertext||tag and
  copies the tag forward.

The nonce is not rebuilt inside the frame (the "implicit IV over the old tag
slot" trick): packing the packet-id into a preallocated 12-byte nonce is cheaper
than writing the frame and slicing it. Per packet there are no allocations beyond
memoryview slices and the 16-byte tag. scripts/bench_datachannel.py measures packets/s.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .constants import (
    AEAD_CIPHERS,
    AEAD_NONCE_TAIL_LEN,
    AEAD_TAG_LEN,
    DATA_V2_AAD_LEN,
    DATA_V2_HEADER_LEN,
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    KEY_ID_MASK,
    MAX_PEER_ID,
    OCC_EXIT_PAYLOAD,
    OPCODE_SHIFT,
    PING_PAYLOAD,
    Opcode,
)
from .errors import AuthError, KeyError_, ParseError, ReplayError
from .pktid import PacketIdSender, ReplayWindow

_HEAD = struct.Struct("!II")  # op|kid|peer-id as one word, then the packet-id
_OP_PID = struct.Struct("!B3xI")  # op|kid, (peer-id skipped), packet-id
_PID = struct.Struct("!I")
_TAG = struct.Struct(f"{AEAD_TAG_LEN}s")  # moves the tag in one call, cheaper than slicing
Buffer = bytes | bytearray | memoryview
MIN_PACKET_LEN = DATA_V2_HEADER_LEN + 1  # openvpn rejects an empty payload ("missing payload")
FRAME_SLACK = AEAD_TAG_LEN  # spare bytes *_frame needs after the packet
MAX_PAYLOAD = 0xFFFF
SCRATCH_MIN = 2048  # first scratch allocation: an MTU-sized packet never needs more


def is_ping(plaintext: bytes | bytearray | memoryview) -> bool:
    """Keepalive ping: exactly the 16 magic bytes (ping.h: is_ping_msg)."""
    return len(plaintext) == len(PING_PAYLOAD) and plaintext == PING_PAYLOAD


def is_occ_exit(plaintext: bytes | bytearray | memoryview) -> bool:
    """OCC EXIT: the OCC magic followed by opcode 6 (occ.c)."""
    n = len(OCC_EXIT_PAYLOAD)
    return len(plaintext) >= n and plaintext[:n] == OCC_EXIT_PAYLOAD


@dataclass(frozen=True)
class DataKey:
    """One direction's AEAD key and 8-byte implicit IV."""

    cipher: str
    key: bytes
    nonce_tail: bytes

    def __post_init__(self) -> None:
        want = AEAD_CIPHERS.get(self.cipher)
        if want is None:
            raise KeyError_(f"unsupported data cipher {self.cipher!r}")
        if len(self.key) != want:
            raise ValueError(f"{self.cipher} key must be {want} bytes")
        if len(self.nonce_tail) != AEAD_NONCE_TAIL_LEN:
            raise ValueError(f"nonce tail must be {AEAD_NONCE_TAIL_LEN} bytes")

    def aead(self) -> AESGCM | ChaCha20Poly1305:
        if self.cipher == "CHACHA20-POLY1305":
            return ChaCha20Poly1305(self.key)
        return AESGCM(self.key)


class DataChannelCrypto:
    """One key slot (key-id) of one peer: encrypts outgoing and decrypts incoming DATA_V2."""

    overhead = DATA_V2_HEADER_LEN
    plaintext_offset = DATA_V2_HEADER_LEN  # where *_frame and seal_run keep the plaintext

    def __init__(
        self,
        key_id: int,
        peer_id: int,
        encrypt: DataKey,
        decrypt: DataKey,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
    ) -> None:
        if not 0 <= key_id <= KEY_ID_MASK:
            raise ValueError(f"key-id {key_id} out of range")
        if not 0 <= peer_id <= MAX_PEER_ID:
            raise ValueError(f"peer-id {peer_id} out of range")
        if encrypt.cipher != decrypt.cipher:
            raise ValueError("both directions must use the same cipher")
        self.key_id = key_id
        self.peer_id = peer_id
        self.cipher = encrypt.cipher
        self._op = (Opcode.DATA_V2 << OPCODE_SHIFT) | key_id
        self._head_word = self._op << 24 | peer_id
        self._enc = encrypt.aead()
        self._dec = decrypt.aead()
        # Nonces: packet-id packed into [0:4] per packet, the tail fixed at [4:12].
        self._enc_nonce = bytearray(4) + encrypt.nonce_tail
        self._dec_nonce = bytearray(4) + decrypt.nonce_tail
        self._scratch = memoryview(bytearray(0))  # grown on demand: peers x slots add up
        self.sender = PacketIdSender()
        self.replay = ReplayWindow(replay_window, replay_time)
        # Counters.
        self.tx_packets = self.tx_bytes = 0
        self.rx_packets = self.rx_bytes = 0
        self.rx_malformed = self.rx_auth_failed = 0

    # Queries the data plane polls.
    @property
    def needs_renegotiation(self) -> bool:
        return self.sender.needs_renegotiation

    @property
    def rx_replayed(self) -> int:
        return self.replay.rejected

    is_ping = staticmethod(is_ping)
    is_occ_exit = staticmethod(is_occ_exit)

    # Egress.
    def encrypt_into(self, out: Buffer, plaintext: Buffer, now: float) -> int:
        """Write the whole DATA_V2 packet for `plaintext` into `out`; returns its length.

        With FRAME_SLACK spare bytes in `out` the ciphertext goes straight to its place;
        otherwise it passes through the scratch buffer.
        """
        n = len(plaintext)
        end = DATA_V2_HEADER_LEN + n
        view = out if type(out) is memoryview else memoryview(out)
        if not 0 < n <= MAX_PAYLOAD or len(view) < end:
            raise ValueError("plaintext must be 1..65535 bytes and fit in the output")
        self._next_tx(view)
        if len(view) >= end + AEAD_TAG_LEN:
            self._enc.encrypt_into(
                self._enc_nonce,
                plaintext,
                view[:DATA_V2_AAD_LEN],
                view[DATA_V2_HEADER_LEN : end + AEAD_TAG_LEN],
            )
            _TAG.pack_into(view, DATA_V2_AAD_LEN, _TAG.unpack_from(view, end)[0])
        else:
            scratch = self._scratch_for(n)
            self._enc.encrypt_into(
                self._enc_nonce, plaintext, view[:DATA_V2_AAD_LEN], scratch[: n + AEAD_TAG_LEN]
            )
            _TAG.pack_into(view, DATA_V2_AAD_LEN, _TAG.unpack_from(scratch, n)[0])
            view[DATA_V2_HEADER_LEN:end] = scratch[:n]
        self.tx_packets += 1
        self.tx_bytes += n
        return end

    def encrypt(self, plaintext: bytes, now: float) -> bytes:
        """Convenience (tests, control plane): the DATA_V2 packet as bytes."""
        out = bytearray(DATA_V2_HEADER_LEN + len(plaintext) + AEAD_TAG_LEN)
        return bytes(out[: self.encrypt_into(out, plaintext, now)])

    def encrypt_frame(self, frame: memoryview, length: int, now: float) -> int:
        """In place: plaintext at frame[24:24+length] becomes a DATA_V2 packet at frame[0:].

        `frame` needs FRAME_SLACK bytes after the packet. Returns the packet length.
        """
        if not 0 < length <= MAX_PAYLOAD or len(frame) < DATA_V2_HEADER_LEN + length + AEAD_TAG_LEN:
            raise ValueError("frame too small for the packet and the tag")
        self.seal_run(frame, DATA_V2_HEADER_LEN + length, 1, length, now)
        return DATA_V2_HEADER_LEN + length

    def seal_run(self, buf: memoryview, stride: int, count: int, last: int, now: float) -> None:
        """In place, a GSO run: `count` packets at buf[i*stride:], each with its plaintext
        24 bytes in (stride - 24 bytes long, the last one `last`), become DATA_V2 packets.

        One call and one packet-id reservation per run instead of per packet. The tag of
        packet i lands on packet i+1's header before it moves forward, so the headers are
        written in order; `buf` needs FRAME_SLACK bytes after the last packet.
        """
        size = stride - DATA_V2_HEADER_LEN
        end = (count - 1) * stride + DATA_V2_HEADER_LEN + last
        if count < 1 or not 0 < last <= size or size > MAX_PAYLOAD or len(buf) < end + AEAD_TAG_LEN:
            raise ValueError("run does not fit the buffer")
        pid = self.sender.take(count)
        encrypt, nonce, word = self._enc.encrypt_into, self._enc_nonce, self._head_word
        head, pack_pid, tag = _HEAD.pack_into, _PID.pack_into, _TAG
        for start in range(0, count * stride, stride):
            n = size if start + stride < end else last
            body = start + DATA_V2_HEADER_LEN
            head(buf, start, word, pid)
            pack_pid(nonce, 0, pid)
            encrypt(nonce, buf[body : body + n], buf[start : start + DATA_V2_AAD_LEN],
                    buf[body : body + n + AEAD_TAG_LEN])
            tag.pack_into(buf, start + DATA_V2_AAD_LEN, tag.unpack_from(buf, body + n)[0])
            pid += 1
        self.tx_packets += count
        self.tx_bytes += end - count * DATA_V2_HEADER_LEN

    def _scratch_for(self, n: int) -> memoryview:
        """The reusable buffer, with room for n bytes and a tag."""
        if len(self._scratch) < n + AEAD_TAG_LEN:
            self._scratch = memoryview(bytearray(max(n + AEAD_TAG_LEN, SCRATCH_MIN)))
        return self._scratch

    def _next_tx(self, view: memoryview) -> None:
        """Take the next packet-id; write the header and the nonce for it."""
        pid = self.sender.next()
        _HEAD.pack_into(view, 0, self._head_word, pid)
        _PID.pack_into(self._enc_nonce, 0, pid)

    # Ingress.
    def _open(self, packet: Buffer, length: int, now: float) -> int:
        """Check the cleartext header and the replay window; returns the packet-id.

        Every rejection is counted and raised (ParseError, KeyError_, ReplayError).
        """
        if not MIN_PACKET_LEN <= length <= MAX_PAYLOAD + DATA_V2_HEADER_LEN:
            self.rx_malformed += 1
            raise ParseError(f"DATA_V2 packet too {'short' if length < MIN_PACKET_LEN else 'long'}")
        op, pid = _OP_PID.unpack_from(packet, 0)
        if op != self._op:
            self.rx_malformed += 1
            if op >> OPCODE_SHIFT != Opcode.DATA_V2:
                raise ParseError("not a DATA_V2 packet")
            raise KeyError_(f"packet for key-id {op & KEY_ID_MASK}, not {self.key_id}")
        replay = self.replay
        if pid <= replay.highest and not replay.check(pid, now):
            raise ReplayError(f"packet-id {pid} replayed or outside the replay window")
        _PID.pack_into(self._dec_nonce, 0, pid)
        return pid

    def _accept(self, pid: int, n: int, now: float) -> int:
        self.replay.update(pid, now)
        self.rx_packets += 1
        self.rx_bytes += n
        return n

    def decrypt_into(self, out: Buffer, packet: Buffer, now: float) -> int:
        """Authenticate and decrypt a DATA_V2 packet into `out`; returns the plaintext length.

        Raises (and counts) ParseError, KeyError_, AuthError or ReplayError; a packet that
        fails leaves the replay window untouched.
        """
        length = len(packet)
        pid = self._open(packet, length, now)
        n = length - DATA_V2_HEADER_LEN
        if len(out) < n:
            self.rx_malformed += 1
            raise ParseError("output buffer too small for the payload")
        src = packet if type(packet) is memoryview else memoryview(packet)
        dst = out if type(out) is memoryview else memoryview(out)
        scratch = self._scratch_for(n)
        scratch[:n] = src[DATA_V2_HEADER_LEN:]
        _TAG.pack_into(scratch, n, _TAG.unpack_from(packet, DATA_V2_AAD_LEN)[0])
        try:
            self._dec.decrypt_into(
                self._dec_nonce, scratch[: n + AEAD_TAG_LEN], src[:DATA_V2_AAD_LEN], dst[:n]
            )
        except InvalidTag:
            self.rx_auth_failed += 1
            raise AuthError("DATA_V2 authentication failed") from None
        return self._accept(pid, n, now)

    def decrypt(self, packet: bytes, now: float) -> bytes:
        """Convenience (tests, control plane): the plaintext as bytes."""
        out = bytearray(max(len(packet) - DATA_V2_HEADER_LEN, 0))
        return bytes(out[: self.decrypt_into(out, packet, now)])

    def decrypt_frame(self, frame: memoryview, length: int, now: float) -> int:
        """In place: decrypt the DATA_V2 packet in frame[0:length]; the plaintext ends up at
        frame[24:24+n] and n is returned. `frame` needs FRAME_SLACK bytes after the packet.

        The tag is copied behind the ciphertext so that ciphertext||tag is contiguous (the
        frame is scratch afterwards, even on failure). The data plane's receive path: the
        checks of `_open` are inlined for the usual packet, the rare ones raise from there.
        """
        if not MIN_PACKET_LEN <= length <= MAX_PAYLOAD + DATA_V2_HEADER_LEN or len(
            frame
        ) < length + AEAD_TAG_LEN:
            return self._frame_refused(frame, length, now)
        op, pid = _OP_PID.unpack_from(frame, 0)
        replay = self.replay
        if op != self._op or pid <= replay.highest:
            self._open(frame, length, now)  # raises, or says an old id is still new
        nonce = self._dec_nonce
        _PID.pack_into(nonce, 0, pid)
        frame[length : length + AEAD_TAG_LEN] = frame[DATA_V2_AAD_LEN:DATA_V2_HEADER_LEN]
        try:
            n = self._dec.decrypt_into(
                nonce,
                frame[DATA_V2_HEADER_LEN : length + AEAD_TAG_LEN],
                frame[:DATA_V2_AAD_LEN],
                frame[DATA_V2_HEADER_LEN:length],
            )
        except InvalidTag:
            self.rx_auth_failed += 1
            raise AuthError("DATA_V2 authentication failed") from None
        replay.update(pid, now)
        self.rx_packets += 1
        self.rx_bytes += n
        return n

    def _frame_refused(self, frame: memoryview, length: int, now: float) -> int:
        self._open(frame, length, now)  # raises for a bad length
        self.rx_malformed += 1
        raise ParseError("frame has no room to move the tag")
