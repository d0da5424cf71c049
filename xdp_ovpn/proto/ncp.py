"""Negotiable crypto parameters: which data cipher two peers use (ssl_ncp.c, multi.c).

Only the AEAD ciphers the data plane implements can be configured or chosen;
everything else is a NegotiationError with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .constants import AEAD_CIPHERS, IVProto
from .errors import NegotiationError
from .keys import p2p_peer_id_from_ekm
from .peerinfo import iv_ciphers, iv_ncp, iv_proto

# IV_NCP=2 without IV_CIPHERS promises exactly these (ssl_ncp.c: tls_peer_ncp_list).
NCP2_CIPHERS = ("AES-256-GCM", "AES-128-GCM")
# Fixed p2p peer-id ('v' 'p' 'n') when the peers cannot export one (ssl_ncp.c).
P2P_DEFAULT_PEER_ID = 0x76706E
MAX_DATA_CIPHERS_LEN = 127  # openvpn's limit on the --data-ciphers string


def normalize_cipher(name: str) -> str:
    """Canonical spelling of a supported cipher (names are case-insensitive in openvpn)."""
    canonical = name.strip().upper()
    if canonical not in AEAD_CIPHERS:
        raise NegotiationError(f"unsupported data cipher {name!r} (AEAD ciphers only)")
    return canonical


def parse_data_ciphers(spec: str | Sequence[str]) -> tuple[str, ...]:
    """A --data-ciphers list ("A:B:?C"); a "?" prefix marks a cipher that may be missing."""
    names = spec.split(":") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in names:
        optional = raw.startswith("?")
        name = raw[1:] if optional else raw
        try:
            cipher = normalize_cipher(name)
        except NegotiationError:
            if optional:
                continue
            raise
        if cipher not in out:
            out.append(cipher)
    if not out:
        raise NegotiationError("data-ciphers has no usable cipher")
    if len(":".join(out)) > MAX_DATA_CIPHERS_LEN:
        raise NegotiationError(f"data-ciphers longer than {MAX_DATA_CIPHERS_LEN} characters")
    return tuple(out)


def peer_cipher_list(peer_info: Mapping[str, str]) -> list[str]:
    """What the peer says it can do: IV_CIPHERS, else the IV_NCP=2 pair, else nothing."""
    ciphers = iv_ciphers(peer_info)
    if ciphers is not None:
        return ciphers
    return list(NCP2_CIPHERS) if iv_ncp(peer_info) >= 2 else []


def peer_supports_ncp(peer_info: Mapping[str, str]) -> bool:
    """Whether to push `cipher` to this client (ssl_ncp.c: tls_peer_supports_ncp)."""
    return "IV_CIPHERS" in peer_info or iv_ncp(peer_info) >= 2


def select_server_cipher(
    data_ciphers: Sequence[str],
    peer_info: Mapping[str, str],
    remote_cipher: str | None = None,
    fallback: str | None = None,
) -> str:
    """The cipher a server pushes (multi.c: multi_client_set_protocol_options).

    The first of our data-ciphers the client lists wins. A client without IV_CIPHERS may
    still have named one in its OCC options string (`remote_cipher`), and a client that
    says nothing at all gets `fallback` (data-ciphers-fallback) if configured.
    """
    peer_list = peer_cipher_list(peer_info)
    # A client that sends IV_CIPHERS is not assumed to accept its OCC cipher.
    occ = None if "IV_CIPHERS" in peer_info else remote_cipher
    for cipher in data_ciphers:
        if cipher in peer_list or cipher == occ:
            return cipher
    if peer_list:
        raise NegotiationError(
            f"no shared cipher: ours {':'.join(data_ciphers)}, client's {':'.join(peer_list)}"
        )
    if remote_cipher is not None:
        raise NegotiationError(f"no shared cipher: client only supports {remote_cipher}")
    if fallback is not None:
        return normalize_cipher(fallback)
    raise NegotiationError("client sent no cipher information; set data-ciphers-fallback")


def check_pushed_cipher(pushed: str, data_ciphers: Sequence[str], fallback: str | None) -> str:
    """Client side: accept a pushed cipher only if we allow it (ssl_ncp.c: check_session_cipher)."""
    cipher = normalize_cipher(pushed)
    if cipher in data_ciphers or (fallback is not None and cipher == normalize_cipher(fallback)):
        return cipher
    raise NegotiationError(f"server pushed cipher {pushed} not in {':'.join(data_ciphers)}")


def client_cipher_without_push(
    remote_cipher: str | None, data_ciphers: Sequence[str], fallback: str | None
) -> str:
    """Client side when the server pushed no cipher (ssl_ncp.c: check_pull_client_ncp)."""
    if remote_cipher is not None and remote_cipher in data_ciphers:
        return remote_cipher
    if remote_cipher is None and fallback is not None:
        return normalize_cipher(fallback)
    if remote_cipher is not None:
        raise NegotiationError(
            f"server uses {remote_cipher}, not in data-ciphers {':'.join(data_ciphers)}"
        )
    raise NegotiationError("server sent no cipher; set data-ciphers-fallback")


@dataclass(frozen=True)
class P2PParams:
    """Result of 2.6 TLS peer-to-peer negotiation (ssl_ncp.c: p2p_mode_ncp)."""

    cipher: str
    peer_id: int
    use_ekm: bool
    cc_exit: bool
    epoch: bool = False  # 2.7's epoch data format


def common_p2p_cipher(
    data_ciphers: Sequence[str], peer_info: Mapping[str, str], is_server: bool
) -> str | None:
    """First cipher in the tls-server's list that the tls-client also has, None when the
    peer sent no IV_CIPHERS or shares none (get_p2p_ncp_cipher).

    Both ends run the same rule, so they agree without another message.
    """
    peer = iv_ciphers(peer_info)
    if peer is not None:
        server_list, client_list = (data_ciphers, peer) if is_server else (peer, data_ciphers)
        for cipher in server_list:
            if cipher in client_list:
                return cipher
    return None


def select_p2p_cipher(
    data_ciphers: Sequence[str],
    peer_info: Mapping[str, str],
    is_server: bool,
    fallback: str | None = None,
) -> str:
    """The common cipher (common_p2p_cipher), else data-ciphers-fallback."""
    cipher = common_p2p_cipher(data_ciphers, peer_info, is_server)
    if cipher is not None:
        return cipher
    if fallback is not None:
        return normalize_cipher(fallback)
    raise NegotiationError("p2p: no common cipher and no data-ciphers-fallback")


def negotiate_p2p(
    data_ciphers: Sequence[str],
    peer_info: Mapping[str, str],
    is_server: bool,
    fallback: str | None = None,
    export_peer_id: bytes | None = None,
    local_ekm: bool = True,
    local_epoch: bool = False,
) -> P2PParams:
    """Cipher, peer-id and key derivation for a TLS p2p session (p2p_ncp_set_options).

    `export_peer_id` is the 3-byte TLS export under EKM_P2P_PEER_ID_LABEL; it gives the
    peer-id when both sides can export keys, otherwise the fixed 'vpn' id is used.
    `local_ekm` says whether we announced TLS_KEY_EXPORT ourselves, `local_epoch` whether
    we announced DATA_EPOCH: the epoch format needs it from both and a common cipher that
    was negotiated (not the fallback) and is AEAD, as 2.7 decides (p2p_ncp_set_options).
    """
    bits = iv_proto(peer_info)
    if IVProto.NCP_P2P not in bits or IVProto.DATA_V2 not in bits:
        # Without p2p NCP openvpn falls back to DATA_V1, which the data plane does not carry.
        raise NegotiationError("p2p peer lacks NCP_P2P/DATA_V2 support (needs OpenVPN 2.6+)")
    use_ekm = local_ekm and IVProto.TLS_KEY_EXPORT in bits
    peer_id = P2P_DEFAULT_PEER_ID
    if use_ekm and export_peer_id is not None:
        peer_id = p2p_peer_id_from_ekm(export_peer_id)
    common = common_p2p_cipher(data_ciphers, peer_info, is_server)
    cipher = select_p2p_cipher(data_ciphers, peer_info, is_server, fallback)
    epoch = (local_epoch and common is not None and common in AEAD_CIPHERS
             and IVProto.DATA_EPOCH in bits)
    return P2PParams(cipher, peer_id, use_ekm, IVProto.CC_EXIT_NOTIFY in bits, epoch)
