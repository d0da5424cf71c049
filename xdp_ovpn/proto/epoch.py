"""The epoch data format (openvpn 2.7): one key slot's DATA_V2 encryption and decryption,
with automatic key rotation and a replay window per epoch (crypto.c: *_aead with
CO_EPOCH_DATA_KEY_FORMAT; crypto_epoch.c).

    [op|kid 1][peer-id 3][epoch 2][counter 6][ciphertext n][tag 16]
    AAD = the first 12 bytes; nonce = (epoch << 48 | counter as 8 bytes BE, then 4 zero
    bytes) XOR the epoch's 12-byte implicit IV.

The tag follows the ciphertext, so ciphertext||tag is contiguous as the AEAD API wants it:
no tag moves, and decryption in place needs no spare bytes.

Sending: a counter per epoch, from 1. Before each packet the send key moves to the next
epoch if the current one reached its AEAD usage limit (AES-GCM: plaintext blocks plus
packets at most 2^36 - 1; ChaCha20-Poly1305 has none), if its counter is spent, or if the
peer's key of the same epoch reached that limit or failed to authenticate too often on
our side, which asks the peer to move on too (crypto_epoch.c: epoch_check_send_iterate).

Receiving: the current epoch's key, the one before it ("retiring") and the next
`future_keys` epochs. A packet that authenticates under a future key makes it current:
the current one retires, the retiring one is dropped, new future keys are derived, and
if the peer is now ahead of our send key, our send key jumps to its epoch
(epoch_replace_update_recv_key). Each key keeps its own replay window, so late packets
of the previous epoch still get in once and replays still do not (crypto.c:
crypto_check_replay; packet_id.c: packet_id_move_recv).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .constants import (
    AEAD_CIPHERS,
    AEAD_TAG_LEN,
    DATA_V2_EPOCH_AAD_LEN,
    DATA_V2_EPOCH_OVERHEAD,
    DEFAULT_REPLAY_TIME,
    DEFAULT_REPLAY_WINDOW,
    EPOCH_COUNTER_MAX,
    EPOCH_FUTURE_KEYS,
    EPOCH_IMPLICIT_IV_LEN,
    EPOCH_MAX,
    EPOCH_RENEG_THRESHOLD,
    KEY_ID_MASK,
    MAX_PEER_ID,
    OPCODE_SHIFT,
    Opcode,
)
from .datachannel import is_occ_exit, is_ping
from .epochkeys import EpochDataKey, EpochKey, initial_epoch_keys
from .errors import AuthError, KeyError_, PacketIdExhausted, ParseError, ReplayError
from .pktid import ReplayWindow

_HEAD = struct.Struct("!IQ")  # op|kid|peer-id as one word, then epoch|counter
_OP_ID = struct.Struct("!B3xQ")  # op|kid, (peer-id skipped), epoch|counter
_Q = struct.Struct("!Q")
Buffer = bytes | bytearray | memoryview
MIN_PACKET_LEN = DATA_V2_EPOCH_OVERHEAD + 1  # an empty payload is refused, as in 2.6
MAX_PAYLOAD = 0xFFFF

# AEAD usage limits (crypto.c: cipher_get_aead_limits, crypto.h): q + s <= 2^36 - 1 for
# AES-GCM, q packets and s plaintext blocks of 16 bytes; failed tag checks per key.
AES_GCM_USAGE_LIMIT = (1 << 36) - 1
LIMIT_BLOCK = 16
FAILED_VERIFY_LIMIT = 1 << 36  # a key refuses to decrypt beyond this
FAILED_VERIFY_WARN = 1 << 35  # ... and asks the peer to move on beyond this


def usage_limit(cipher: str) -> int:
    """The AEAD usage limit of a cipher in packets plus blocks; 0 for none (ChaCha20-Poly1305)."""
    return 0 if cipher == "CHACHA20-POLY1305" else AES_GCM_USAGE_LIMIT


def pack_packet_id(epoch: int, counter: int) -> bytes:
    """The 8-byte wire packet-id: 16-bit epoch, 48-bit counter, big-endian."""
    if not 0 <= epoch <= EPOCH_MAX or not 0 <= counter <= EPOCH_COUNTER_MAX:
        raise ValueError("epoch is 16 bits, the counter 48")
    return _Q.pack(epoch << 48 | counter)


def unpack_packet_id(data: Buffer) -> tuple[int, int]:
    """(epoch, counter) from an 8-byte wire packet-id."""
    value = _Q.unpack_from(data, 0)[0]
    return value >> 48, value & EPOCH_COUNTER_MAX


class _EpochKeyState:
    """One epoch's AEAD context in one direction, what it has protected, and its nonce."""

    __slots__ = ("_iv_high", "aead", "blocks", "epoch", "failed", "nonce")

    def __init__(self, data_key: EpochDataKey) -> None:
        if len(data_key.implicit_iv) != EPOCH_IMPLICIT_IV_LEN:
            raise ValueError(f"implicit IV must be {EPOCH_IMPLICIT_IV_LEN} bytes")
        self.epoch = data_key.epoch
        cls = ChaCha20Poly1305 if data_key.cipher == "CHACHA20-POLY1305" else AESGCM
        self.aead = cls(data_key.key)
        self._iv_high = int.from_bytes(data_key.implicit_iv[:8], "big")
        self.nonce = bytearray(8) + data_key.implicit_iv[8:]
        self.blocks = 0  # plaintext blocks for the usage limit
        self.failed = 0  # failed tag checks

    def nonce_for(self, packet_id: int) -> bytearray:
        _Q.pack_into(self.nonce, 0, packet_id ^ self._iv_high)
        return self.nonce


class _SendKey(_EpochKeyState):
    __slots__ = ("counter",)

    def __init__(self, data_key: EpochDataKey) -> None:
        super().__init__(data_key)
        self.counter = 0  # the last counter used


class _RecvKey(_EpochKeyState):
    """A receive epoch's key: only its secret until a packet names the epoch (`ready`), then
    its AEAD context and replay window, so the future keys cost little while unused."""

    __slots__ = ("_pending", "replay")

    def __init__(self, secret: EpochKey, cipher: str, window: int, window_time: float) -> None:
        self.epoch = secret.epoch
        self._pending: tuple[EpochKey, str, int, float] | None = (
            secret, cipher, window, window_time)

    def ready(self) -> _RecvKey:
        if self._pending is not None:
            secret, cipher, window, window_time = self._pending
            super().__init__(secret.data_key(cipher))
            self.replay = ReplayWindow(window, window_time)
            self._pending = None
        return self


class EpochDataChannel:
    """One key slot (key-id) of one peer in the epoch format: the epoch counterpart of
    DataChannelCrypto, with the same encrypt/decrypt calls and counters."""

    overhead = DATA_V2_EPOCH_OVERHEAD
    plaintext_offset = DATA_V2_EPOCH_AAD_LEN  # where *_frame and seal_run keep the plaintext
    is_ping = staticmethod(is_ping)
    is_occ_exit = staticmethod(is_occ_exit)

    def __init__(
        self,
        key_id: int,
        peer_id: int,
        cipher: str,
        send: EpochKey,
        receive: EpochKey,
        *,
        future_keys: int = EPOCH_FUTURE_KEYS,
        replay_window: int = DEFAULT_REPLAY_WINDOW,
        replay_time: float = DEFAULT_REPLAY_TIME,
        limit: int | None = None,
    ) -> None:
        """`send` and `receive` are the first epoch keys (E_1 from key2 for a new session,
        see epochkeys.initial_epoch_keys). `limit` overrides the cipher's usage limit."""
        if not 0 <= key_id <= KEY_ID_MASK:
            raise ValueError(f"key-id {key_id} out of range")
        if not 0 <= peer_id <= MAX_PEER_ID:
            raise ValueError(f"peer-id {peer_id} out of range")
        if cipher not in AEAD_CIPHERS:
            raise KeyError_(f"unsupported data cipher {cipher!r}")
        if not 1 <= future_keys < EPOCH_MAX // 2:
            raise ValueError("future_keys out of range")
        self.key_id = key_id
        self.peer_id = peer_id
        self.cipher = cipher
        self.limit = usage_limit(cipher) if limit is None else limit
        self.future_keys = future_keys
        self._window = (replay_window, replay_time)
        self._op = (Opcode.DATA_V2 << OPCODE_SHIFT) | key_id
        self._head_word = self._op << 24 | peer_id
        self._send_secret = send
        self._tx = _SendKey(send.data_key(cipher))
        # Called with (send epoch, receive epoch) whenever either changes: the data plane
        # records them so that a replacement worker never reuses an epoch's nonces and
        # still reads a peer that has moved on.
        self.on_epochs: Callable[[int, int], None] | None = None
        self._recv_secret = receive  # the newest receive epoch key derived so far
        self._rx = self._recv_key(receive).ready()
        self._retiring: _RecvKey | None = None
        self._future: list[_RecvKey] = []
        self._derive_future()
        # Counters.
        self.tx_packets = self.tx_bytes = self.tx_rotations = 0
        self.rx_packets = self.rx_bytes = self.rx_rotations = 0
        self.rx_malformed = self.rx_auth_failed = self.rx_replayed = self.rx_unknown_epoch = 0

    @classmethod
    def from_key2(
        cls, key_id: int, peer_id: int, cipher: str, key2: bytes, is_server: bool, **options
    ) -> EpochDataChannel:
        """A new session's slot: E_1 of both directions from key2, as openvpn takes them."""
        send, receive = initial_epoch_keys(key2, is_server)
        return cls(key_id, peer_id, cipher, send, receive, **options)

    # ------------------------------------------------------------ state the data plane reads

    @property
    def send_epoch(self) -> int:
        return self._tx.epoch

    @property
    def receive_epoch(self) -> int:
        return self._rx.epoch

    @property
    def retiring_epoch(self) -> int | None:
        return self._retiring.epoch if self._retiring else None

    @property
    def future_epochs(self) -> tuple[int, ...]:
        return tuple(key.epoch for key in self._future)

    @property
    def highest_derived_epoch(self) -> int:
        """The newest receive epoch key derived (openvpn's epoch_key_recv)."""
        return self._recv_secret.epoch

    @property
    def needs_renegotiation(self) -> bool:
        """The send epoch nears the end of the chain: time for a new TLS session key."""
        return self._send_secret.epoch >= EPOCH_RENEG_THRESHOLD

    # ------------------------------------------------------------ keys

    def _recv_key(self, secret: EpochKey) -> _RecvKey:
        return _RecvKey(secret, self.cipher, *self._window)

    def _derive_future(self) -> None:
        """Top the future keys up to the `future_keys` epochs after the current one."""
        want = min(self._rx.epoch + self.future_keys, EPOCH_MAX)
        while self._recv_secret.epoch < want:
            self._recv_secret = self._recv_secret.next()
            self._future.append(self._recv_key(self._recv_secret))

    def decrypt_key_epoch(self, epoch: int) -> int | None:
        """The epoch of the key a packet of `epoch` would be checked with, None if none."""
        key = self._lookup(epoch)
        return key.epoch if key else None

    def _lookup(self, epoch: int) -> _RecvKey | None:
        """epoch_lookup_decrypt_key: current, retiring, or one of the future keys."""
        rx = self._rx
        if epoch == rx.epoch:
            return rx
        if self._retiring is not None and epoch == self._retiring.epoch:
            return self._retiring
        index = epoch - rx.epoch - 1
        # Near the end of the chain a future key is refused: moving to it could not keep
        # `future_keys` keys ahead (openvpn stops at the same edge).
        if 0 <= index < len(self._future) and epoch <= EPOCH_MAX - self.future_keys - 1:
            return self._future[index]
        return None

    def rotate_send(self) -> None:
        """Move the send key to the next epoch (epoch_iterate_send_key)."""
        if self._send_secret.epoch >= EPOCH_MAX:
            raise PacketIdExhausted("the send epoch chain is spent: the key must be renegotiated")
        self._send_to(self._send_secret.epoch + 1)

    def advance_send(self, epoch: int) -> None:
        """Move the send key forward to `epoch` (not back), e.g. past the epochs a previous
        process may have used with this key."""
        if epoch > EPOCH_MAX:
            raise PacketIdExhausted("the send epoch chain is spent: the key must be renegotiated")
        if epoch > self._send_secret.epoch:
            self._send_to(epoch)

    def _send_to(self, epoch: int) -> None:
        while self._send_secret.epoch < epoch:
            self._send_secret = self._send_secret.next()
        self._tx = _SendKey(self._send_secret.data_key(self.cipher))
        self.tx_rotations += 1
        self._report()

    def _report(self) -> None:
        if self.on_epochs is not None:
            self.on_epochs(self._tx.epoch, self._rx.epoch)

    def advance_receive(self, epoch: int) -> None:
        """Make `epoch` the current receive epoch (forward only; the retiring key goes), e.g.
        where a previous process had followed the peer to."""
        if epoch > EPOCH_MAX:
            raise KeyError_(f"epoch {epoch} beyond the chain")
        if epoch <= self._rx.epoch:
            return
        if epoch <= self._recv_secret.epoch:  # one of the future keys
            index = epoch - self._rx.epoch - 1
            self._rx = self._future[index]
            del self._future[: index + 1]
        else:
            secret = self._recv_secret
            while secret.epoch < epoch:
                secret = secret.next()
            self._recv_secret = secret
            self._rx = self._recv_key(secret)
            self._future = []
        self._rx.ready()
        self._retiring = None
        self._derive_future()
        self._report()

    def move_receive_to(self, epoch: int) -> None:
        """Make the future key of `epoch` current (epoch_replace_update_recv_key).

        Called once a packet of that epoch authenticated; our send key follows if it is
        behind, since the peer has moved on and keeps no older key of ours for long.
        """
        index = epoch - self._rx.epoch - 1
        if not 0 <= index < len(self._future):
            raise KeyError_(f"epoch {epoch} is not a future receive epoch")
        if self._tx.epoch < epoch:
            self._send_to(epoch)
        self._retiring = self._rx
        self._rx = self._future[index]
        del self._future[: index + 1]
        self._derive_future()
        self.rx_rotations += 1
        self._report()

    def _check_send_rotation(self) -> None:
        """epoch_check_send_iterate, before every packet."""
        if self._send_secret.epoch >= EPOCH_MAX:
            return
        tx, rx, limit = self._tx, self._rx, self.limit
        if limit:
            if tx.blocks + tx.counter > limit:
                self.rotate_send()
            elif tx.epoch == rx.epoch and (
                rx.blocks + rx.replay.highest > limit or rx.failed > FAILED_VERIFY_WARN
            ):
                self.rotate_send()  # the peer's key is worn: show it a newer epoch
        if self._tx.counter >= EPOCH_COUNTER_MAX:
            self.rotate_send()

    # ------------------------------------------------------------ egress

    def encrypt_into(self, out: Buffer, plaintext: Buffer, now: float) -> int:
        """Write the whole packet for `plaintext` into `out`; returns its length.

        `out` must not overlap `plaintext` unless the plaintext already sits at out[12:].
        """
        n = len(plaintext)
        end = DATA_V2_EPOCH_OVERHEAD + n
        view = out if type(out) is memoryview else memoryview(out)
        if not 0 < n <= MAX_PAYLOAD or len(view) < end:
            raise ValueError("plaintext must be 1..65535 bytes and fit in the output")
        self._seal(view, 0, plaintext, n)
        self.tx_packets += 1
        self.tx_bytes += n
        return end

    def _seal(self, view: memoryview, start: int, plaintext: Buffer, n: int) -> None:
        """One packet at view[start:]: rotation check, header, ciphertext and tag."""
        self._check_send_rotation()
        tx = self._tx
        if tx.counter >= EPOCH_COUNTER_MAX:
            raise PacketIdExhausted("packet counter of the last epoch spent: "
                                    "the key must be renegotiated")
        tx.counter += 1
        packet_id = tx.epoch << 48 | tx.counter
        _HEAD.pack_into(view, start, self._head_word, packet_id)
        body = start + DATA_V2_EPOCH_AAD_LEN
        tx.aead.encrypt_into(
            tx.nonce_for(packet_id),
            plaintext,
            view[start:body],
            view[body : body + n + AEAD_TAG_LEN],
        )
        # The usage count covers what openvpn's work buffer holds: header, id, ciphertext.
        tx.blocks += (DATA_V2_EPOCH_AAD_LEN + n + LIMIT_BLOCK - 1) // LIMIT_BLOCK

    def seal_run(self, buf: memoryview, stride: int, count: int, last: int, now: float) -> None:
        """In place, a GSO run: `count` packets at buf[i*stride:], each with its plaintext
        12 bytes in (stride - 28 bytes long, the last one `last`), become packets.

        The tag lands right behind each ciphertext, which is where the next packet starts:
        no slack is needed and nothing moves. The rotation check runs per packet, so a run
        may cross into the next epoch as single packets would.
        """
        size = stride - DATA_V2_EPOCH_OVERHEAD
        end = (count - 1) * stride + DATA_V2_EPOCH_OVERHEAD + last
        if count < 1 or not 0 < last <= size or size > MAX_PAYLOAD or len(buf) < end:
            raise ValueError("run does not fit the buffer")
        seal = self._seal
        for start in range(0, count * stride, stride):
            n = size if start + stride < end else last
            body = start + DATA_V2_EPOCH_AAD_LEN
            seal(buf, start, buf[body : body + n], n)
        self.tx_packets += count
        self.tx_bytes += end - count * DATA_V2_EPOCH_OVERHEAD

    def encrypt(self, plaintext: bytes, now: float) -> bytes:
        """Convenience (tests, control plane): the packet as bytes."""
        out = bytearray(DATA_V2_EPOCH_OVERHEAD + len(plaintext))
        return bytes(out[: self.encrypt_into(out, plaintext, now)])

    def encrypt_frame(self, frame: memoryview, length: int, now: float) -> int:
        """In place: plaintext at frame[12:12+length] becomes the packet at frame[0:]."""
        payload = frame[DATA_V2_EPOCH_AAD_LEN : DATA_V2_EPOCH_AAD_LEN + length]
        if len(payload) != length:
            raise ValueError("frame too small for the payload")
        return self.encrypt_into(frame, payload, now)

    # ------------------------------------------------------------ ingress

    def decrypt_into(self, out: Buffer, packet: Buffer, now: float) -> int:
        """Authenticate and decrypt a packet into `out`; returns the plaintext length.

        Raises (and counts) ParseError, KeyError_ (unknown key-id or epoch), AuthError or
        ReplayError. A packet that fails moves neither keys nor replay windows. `out` may
        be the packet itself from offset 12 (in place).
        """
        length = len(packet)
        if not MIN_PACKET_LEN <= length <= MAX_PAYLOAD + DATA_V2_EPOCH_OVERHEAD:
            self.rx_malformed += 1
            raise ParseError(f"DATA_V2 packet too {'short' if length < MIN_PACKET_LEN else 'long'}")
        op, packet_id = _OP_ID.unpack_from(packet, 0)
        if op != self._op:
            self.rx_malformed += 1
            if op >> OPCODE_SHIFT != Opcode.DATA_V2:
                raise ParseError("not a DATA_V2 packet")
            raise KeyError_(f"packet for key-id {op & KEY_ID_MASK}, not {self.key_id}")
        epoch, counter = packet_id >> 48, packet_id & EPOCH_COUNTER_MAX
        if epoch == 0:
            self.rx_malformed += 1
            raise ParseError("epoch 0 is never sent")
        key = self._lookup(epoch)
        if key is None:
            self.rx_unknown_epoch += 1
            raise KeyError_(f"data packet with unknown epoch {epoch}")
        key.ready()
        if key.failed > FAILED_VERIFY_LIMIT:
            self.rx_auth_failed += 1
            raise AuthError(f"epoch {epoch} key failed verification too often")
        replay = key.replay
        if counter <= replay.highest and not replay.check(counter, now):
            self.rx_replayed += 1
            raise ReplayError(f"packet {epoch}:{counter} replayed or outside the replay window")
        n = length - DATA_V2_EPOCH_OVERHEAD
        if len(out) < n:
            self.rx_malformed += 1
            raise ParseError("output buffer too small for the payload")
        src = packet if type(packet) is memoryview else memoryview(packet)
        dst = out if type(out) is memoryview else memoryview(out)
        try:
            key.aead.decrypt_into(
                key.nonce_for(packet_id),
                src[DATA_V2_EPOCH_AAD_LEN:length],
                src[:DATA_V2_EPOCH_AAD_LEN],
                dst[:n],
            )
        except InvalidTag:
            key.failed += 1
            self.rx_auth_failed += 1
            raise AuthError("DATA_V2 authentication failed") from None
        if key is not self._rx and key is not self._retiring:
            self.move_receive_to(epoch)
        replay.update(counter, now)
        key.blocks += (n + LIMIT_BLOCK - 1) // LIMIT_BLOCK
        self.rx_packets += 1
        self.rx_bytes += n
        return n

    def decrypt(self, packet: bytes, now: float) -> bytes:
        """Convenience (tests, control plane): the plaintext as bytes."""
        out = bytearray(max(len(packet) - DATA_V2_EPOCH_OVERHEAD, 0))
        return bytes(out[: self.decrypt_into(out, packet, now)])

    def decrypt_frame(self, frame: memoryview, length: int, now: float) -> int:
        """In place: the packet in frame[0:length] leaves its plaintext at frame[12:12+n]."""
        return self.decrypt_into(frame[DATA_V2_EPOCH_AAD_LEN:], frame[:length], now)

