"""Codecs for OpenVPN packets: the opcode byte, control packets and data headers.

Control packets are handled here in their plain (unwrapped) layout, as
tls-auth / tls-crypt see them after unwrapping (ssl_pkt.c, reliable.c):

    op|kid, session-id (8), n-acks (1), acks (n x 4), [remote session-id (8) if n],
    [message packet-id (4), absent in ACK_V1], payload

Data packets only get their cleartext headers parsed; the AEAD part is
datachannel.py's. Over TCP every packet carries a 16-bit length prefix
(TCPFramer).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import (
    CONTROL_OPCODES,
    DATA_V2_AAD_LEN,
    DATA_V2_UNDEF_PEER_ID,
    KEY_ID_MASK,
    MAX_ACKS_PER_ACK_PACKET,
    MAX_PEER_ID,
    OPCODE_SHIFT,
    PACKET_ID_LEN,
    PACKET_ID_MAX,
    SESSION_ID_LEN,
    Opcode,
)
from .errors import ParseError

# Key-method 1 resets are obsolete: openvpn only accepts opcodes 3..11 (ssl_pkt.h).
_OBSOLETE = frozenset({Opcode.HARD_RESET_CLIENT_V1, Opcode.HARD_RESET_SERVER_V1})
_VALID_CONTROL = CONTROL_OPCODES - _OBSOLETE
_U32 = struct.Struct("!I")
DATA_V1_HEADER_LEN = 1 + PACKET_ID_LEN
TCP_LENGTH_LEN = 2
TCP_MAX_PACKET = 0xFFFF


def encode_op(opcode: Opcode, key_id: int) -> int:
    """The first byte of every packet: opcode in the high 5 bits, key-id in the low 3."""
    if not 0 <= key_id <= KEY_ID_MASK:
        raise ValueError(f"key-id {key_id} out of range")
    return (int(opcode) << OPCODE_SHIFT) | key_id


def decode_op(byte: int) -> tuple[Opcode, int]:
    """Split the first byte into (opcode, key-id); unknown opcodes are a ParseError."""
    try:
        opcode = Opcode(byte >> OPCODE_SHIFT)
    except ValueError:
        raise ParseError(f"unknown opcode {byte >> OPCODE_SHIFT}") from None
    return opcode, byte & KEY_ID_MASK


def peek_op(data: bytes | bytearray | memoryview) -> tuple[Opcode, int]:
    """Opcode and key-id of a packet, without parsing the rest."""
    if not data:
        raise ParseError("empty packet")
    return decode_op(data[0])


@dataclass(frozen=True)
class ControlPacket:
    """A control-channel packet in its plain layout (before wrapping / after unwrapping)."""

    opcode: Opcode
    key_id: int
    session_id: bytes
    acks: tuple[int, ...] = ()
    remote_session_id: bytes | None = None
    packet_id: int | None = None
    payload: bytes = b""

    def __post_init__(self) -> None:
        if self.opcode not in _VALID_CONTROL:
            raise ValueError(f"{self.opcode!r} is not a control opcode")
        if not 0 <= self.key_id <= KEY_ID_MASK:
            raise ValueError(f"key-id {self.key_id} out of range")
        if len(self.session_id) != SESSION_ID_LEN:
            raise ValueError("session-id must be 8 bytes")
        if len(self.acks) > MAX_ACKS_PER_ACK_PACKET:
            raise ValueError(f"at most {MAX_ACKS_PER_ACK_PACKET} acks fit in a packet")
        if any(not 0 <= a <= PACKET_ID_MAX for a in self.acks):
            raise ValueError("ack packet-id out of range")
        if (self.remote_session_id is not None) != bool(self.acks):
            raise ValueError("remote session-id goes with acks, and only with acks")
        if self.remote_session_id is not None and len(self.remote_session_id) != SESSION_ID_LEN:
            raise ValueError("remote session-id must be 8 bytes")
        is_ack = self.opcode == Opcode.ACK_V1
        if is_ack != (self.packet_id is None):
            raise ValueError("packet-id is absent in ACK_V1 and required elsewhere")
        if self.packet_id is not None and not 0 <= self.packet_id <= PACKET_ID_MAX:
            raise ValueError("packet-id out of range")
        if is_ack and self.payload:
            raise ValueError("ACK_V1 carries no payload")


def encode_control(p: ControlPacket) -> bytes:
    """Serialise a control packet in its plain layout."""
    parts = [
        bytes((encode_op(p.opcode, p.key_id),)),
        p.session_id,
        bytes((len(p.acks),)),
        *(_U32.pack(a) for a in p.acks),
    ]
    if p.remote_session_id is not None:
        parts.append(p.remote_session_id)
    if p.packet_id is not None:
        parts.append(_U32.pack(p.packet_id))
    parts.append(p.payload)
    return b"".join(parts)


def decode_control(data: bytes | bytearray | memoryview) -> ControlPacket:
    """Parse a plain control packet; anything malformed is a ParseError."""
    data = bytes(data)
    opcode, key_id = peek_op(data)
    if opcode not in _VALID_CONTROL:
        raise ParseError(f"{opcode.name} is not a control packet")
    pos = 1 + SESSION_ID_LEN + 1
    if len(data) < pos:
        raise ParseError("truncated control header")
    session_id = data[1 : 1 + SESSION_ID_LEN]
    n_acks = data[pos - 1]
    if n_acks > MAX_ACKS_PER_ACK_PACKET:
        raise ParseError(f"{n_acks} acks in one packet")
    end = pos + n_acks * PACKET_ID_LEN
    if len(data) < end:
        raise ParseError("truncated ack list")
    acks = tuple(_U32.unpack_from(data, pos + i * PACKET_ID_LEN)[0] for i in range(n_acks))
    pos = end
    remote: bytes | None = None
    if n_acks:
        remote = data[pos : pos + SESSION_ID_LEN]
        if len(remote) != SESSION_ID_LEN:
            raise ParseError("truncated remote session-id")
        pos += SESSION_ID_LEN
    packet_id: int | None = None
    if opcode != Opcode.ACK_V1:
        if len(data) < pos + PACKET_ID_LEN:
            raise ParseError("truncated message packet-id")
        packet_id = _U32.unpack_from(data, pos)[0]
        pos += PACKET_ID_LEN
    elif len(data) > pos:
        raise ParseError("trailing bytes after ACK_V1")
    return ControlPacket(opcode, key_id, session_id, acks, remote, packet_id, data[pos:])


@dataclass(frozen=True)
class DataV2Header:
    """The 8 cleartext bytes of a DATA_V2 packet, which are also the AEAD AAD."""

    key_id: int
    peer_id: int
    packet_id: int


def build_data_v2_header(key_id: int, peer_id: int, packet_id: int) -> bytes:
    """op|kid, 24-bit peer-id, 32-bit packet-id (all big endian)."""
    if not 0 <= peer_id <= DATA_V2_UNDEF_PEER_ID:
        raise ValueError(f"peer-id {peer_id} out of range")
    if not 0 <= packet_id <= PACKET_ID_MAX:
        raise ValueError("packet-id out of range")
    op = encode_op(Opcode.DATA_V2, key_id)
    return _U32.pack(op << 24 | peer_id) + _U32.pack(packet_id)


def parse_data_v2_header(buf: bytes | bytearray | memoryview) -> DataV2Header:
    """Parse the DATA_V2 header; ParseError if short or not DATA_V2."""
    if len(buf) < DATA_V2_AAD_LEN:
        raise ParseError("truncated DATA_V2 header")
    first, packet_id = struct.unpack_from("!II", buf)
    opcode, key_id = decode_op(first >> 24)
    if opcode != Opcode.DATA_V2:
        raise ParseError(f"{opcode.name} is not DATA_V2")
    return DataV2Header(key_id, first & 0xFFFFFF, packet_id)


def is_valid_peer_id(peer_id: int) -> bool:
    """A peer-id a server may assign (0xFFFFFF means 'undefined')."""
    return 0 <= peer_id <= MAX_PEER_ID


@dataclass(frozen=True)
class DataV1Header:
    """DATA_V1 with an AEAD cipher: op|kid then the 32-bit packet-id."""

    key_id: int
    packet_id: int


def build_data_v1_header(key_id: int, packet_id: int) -> bytes:
    if not 0 <= packet_id <= PACKET_ID_MAX:
        raise ValueError("packet-id out of range")
    return bytes((encode_op(Opcode.DATA_V1, key_id),)) + _U32.pack(packet_id)


def parse_data_v1_header(buf: bytes | bytearray | memoryview) -> DataV1Header:
    """Parse the DATA_V1 header; ParseError if short or not DATA_V1."""
    if len(buf) < DATA_V1_HEADER_LEN:
        raise ParseError("truncated DATA_V1 header")
    opcode, key_id = decode_op(buf[0])
    if opcode != Opcode.DATA_V1:
        raise ParseError(f"{opcode.name} is not DATA_V1")
    return DataV1Header(key_id, _U32.unpack_from(buf, 1)[0])


def frame_tcp(packet: bytes) -> bytes:
    """Prefix a packet with its 16-bit length, as OpenVPN does over TCP."""
    if not 0 < len(packet) <= TCP_MAX_PACKET:
        raise ValueError("packet does not fit a TCP frame")
    return struct.pack("!H", len(packet)) + packet


class TCPFramer:
    """Reassembles length-prefixed packets from a TCP byte stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add stream bytes; return every packet now complete."""
        self._buf += data
        out: list[bytes] = []
        while len(self._buf) >= TCP_LENGTH_LEN:
            length = int.from_bytes(self._buf[:TCP_LENGTH_LEN], "big")
            if length == 0:
                raise ParseError("zero-length TCP frame")
            if len(self._buf) < TCP_LENGTH_LEN + length:
                break
            out.append(bytes(self._buf[TCP_LENGTH_LEN : TCP_LENGTH_LEN + length]))
            del self._buf[: TCP_LENGTH_LEN + length]
        return out
