"""Wire constants of the OpenVPN 2.6 protocol: the one place they are spelled out.

Sources: openvpn src/openvpn/ssl_pkt.h (opcodes), ssl.h (IV_PROTO bits),
ping.c (ping payload), occ.c (OCC exit), packet_id.h (replay defaults),
reliable.h (window sizes).
"""

from enum import IntEnum, IntFlag


class Opcode(IntEnum):
    HARD_RESET_CLIENT_V1 = 1
    HARD_RESET_SERVER_V1 = 2
    SOFT_RESET_V1 = 3
    CONTROL_V1 = 4
    ACK_V1 = 5
    DATA_V1 = 6
    HARD_RESET_CLIENT_V2 = 7
    HARD_RESET_SERVER_V2 = 8
    DATA_V2 = 9
    HARD_RESET_CLIENT_V3 = 10
    CONTROL_WKC_V1 = 11


OPCODE_SHIFT = 3
KEY_ID_MASK = 0x07
KEY_ID_COUNT = 8

CONTROL_OPCODES = frozenset(
    {
        Opcode.HARD_RESET_CLIENT_V1,
        Opcode.HARD_RESET_SERVER_V1,
        Opcode.SOFT_RESET_V1,
        Opcode.CONTROL_V1,
        Opcode.ACK_V1,
        Opcode.HARD_RESET_CLIENT_V2,
        Opcode.HARD_RESET_SERVER_V2,
        Opcode.HARD_RESET_CLIENT_V3,
        Opcode.CONTROL_WKC_V1,
    }
)
DATA_OPCODES = frozenset({Opcode.DATA_V1, Opcode.DATA_V2})

SESSION_ID_LEN = 8
PACKET_ID_LEN = 4
MAX_ACKS_PER_ACK_PACKET = 8
MAX_ACKS_PIGGYBACKED = 4
RELIABLE_SEND_WINDOW = 6
RELIABLE_RECV_WINDOW = 12
DEFAULT_TLS_MTU = 1250

# DATA_V2: [op|kid 1B][peer-id 3B][packet-id 4B][tag 16B][ciphertext]
DATA_V2_PEER_ID_LEN = 3
DATA_V2_UNDEF_PEER_ID = 0xFFFFFF
MAX_PEER_ID = 0xFFFFFE
AEAD_TAG_LEN = 16
AEAD_NONCE_TAIL_LEN = 8
DATA_V2_AAD_LEN = 8
DATA_V2_HEADER_LEN = DATA_V2_AAD_LEN + AEAD_TAG_LEN  # 24 bytes of overhead
KEY2_LEN = 256  # keys[2] of {cipher[64], hmac[64]}
KEY_HALF_LEN = 64

PACKET_ID_MAX = 0xFFFFFFFF
# Renegotiate well before the 32-bit packet-id wraps (openvpn uses 0xFF000000).
PACKET_ID_RENEG_THRESHOLD = 0xFF000000

DEFAULT_REPLAY_WINDOW = 64
DEFAULT_REPLAY_TIME = 15

PING_PAYLOAD = bytes.fromhex("2a187bf3641eb4cb07ed2d0a981fc748")
OCC_MAGIC = bytes.fromhex("287f346bd4ef7a812d56b8d3afc5459c")
OCC_EXIT = 0x06
OCC_EXIT_PAYLOAD = OCC_MAGIC + bytes([OCC_EXIT])

KEY_METHOD_2 = 2
TLS_EKM_LABEL = b"EXPORTER-OpenVPN-datakeys"
PRF_MASTER_LABEL = b"OpenVPN master secret"
PRF_EXPANSION_LABEL = b"OpenVPN key expansion"

# tls-crypt-v2 early negotiation marker in the V3 reset's packet-id.
TLS_CRYPT_V2_EARLY_NEG_PACKET_ID = 0x0F000000


class IVProto(IntFlag):
    """IV_PROTO peer-info bits (ssl.h)."""

    DATA_V2 = 1 << 1
    REQUEST_PUSH = 1 << 2
    TLS_KEY_EXPORT = 1 << 3
    AUTH_PENDING_KW = 1 << 4
    NCP_P2P = 1 << 5
    DNS_OPTION = 1 << 6
    CC_EXIT_NOTIFY = 1 << 7
    AUTH_FAIL_TEMP = 1 << 8
    DYN_TLS_CRYPT = 1 << 9
    DATA_EPOCH = 1 << 10
    DNS_OPTION_V2 = 1 << 11
    PUSH_UPDATE = 1 << 12


# AEAD data ciphers DCO supports: name -> key length in bytes.
AEAD_CIPHERS: dict[str, int] = {
    "AES-128-GCM": 16,
    "AES-192-GCM": 24,
    "AES-256-GCM": 32,
    "CHACHA20-POLY1305": 32,
}
DEFAULT_DATA_CIPHERS = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")

# Epoch data format (openvpn 2.7: crypto_epoch.c, packet_id.h), negotiated by
# IVProto.DATA_EPOCH or a pushed "protocol-flags aead-epoch":
# [op|kid 1][peer-id 3][epoch 2][counter 6][ciphertext n][tag 16]
# AAD = the first 12 bytes; nonce = (epoch|counter, 8 BE, + 4 zero bytes) XOR the epoch's IV.
EPOCH_PACKET_ID_LEN = 8
DATA_V2_EPOCH_AAD_LEN = 4 + EPOCH_PACKET_ID_LEN
DATA_V2_EPOCH_OVERHEAD = DATA_V2_EPOCH_AAD_LEN + AEAD_TAG_LEN  # 28 bytes
EPOCH_IMPLICIT_IV_LEN = 12
EPOCH_KEY_LEN = 32  # an epoch secret E_n: the first 32 bytes of key2's cipher half, then HKDF
EPOCH_MAX = 0xFFFF
EPOCH_COUNTER_MAX = (1 << 48) - 1  # PACKET_ID_EPOCH_MAX: one epoch's packet counter
# From this send epoch on, openvpn renegotiates (ssl.c: should_trigger_renegotiation).
EPOCH_RENEG_THRESHOLD = 0xF000
EPOCH_FUTURE_KEYS = 4  # receive keys derived ahead of the current one (ssl.c: init_epoch_keys)
EPOCH_LABEL_PREFIX = b"ovpn "
EPOCH_LABEL_UPDATE = b"datakey upd"
EPOCH_LABEL_DATA_KEY = b"data_key"
EPOCH_LABEL_DATA_IV = b"data_iv"
EPOCH_PROTOCOL_FLAG = "aead-epoch"
