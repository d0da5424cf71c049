"""Peer-info (the IV_*/UV_* lines of key method 2) and the OCC options compatibility string.

Peer-info is "KEY=value\\n" lines (ssl.c: push_peer_info). Readers keep lines
whose key is [A-Za-z0-9_]+ and replace unprintable or shell-special characters in
the value with "_" (misc.c: validate_peer_info_line), so values are safe for
scripts and logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .constants import IVProto
from .keys import cipher_key_len

# What we implement, hence announce (ssl.c: push_peer_info): a pulling client
# takes pushed options without a round trip, AUTH_PENDING keywords, AUTH_FAILED,TEMP,
# TLS-EKM keys and the control-channel EXIT. DNS options and dynamic tls-crypt are left out
# until they are implemented; IV_PROTO_DATA_EPOCH is added only where the data plane's
# engine can do the epoch format (`client_peer_info(epoch=True)`).
CLIENT_IV_PROTO = (
    IVProto.DATA_V2
    | IVProto.REQUEST_PUSH
    | IVProto.TLS_KEY_EXPORT
    | IVProto.AUTH_PENDING_KW
    | IVProto.CC_EXIT_NOTIFY
    | IVProto.AUTH_FAIL_TEMP
)
# A TLS peer-to-peer endpoint negotiates with 2.6 p2p NCP instead of pulling.
P2P_IV_PROTO = IVProto.DATA_V2 | IVProto.NCP_P2P | IVProto.TLS_KEY_EXPORT | IVProto.CC_EXIT_NOTIFY

DEFAULT_IV_VER = "2.6.0"
IV_GUI_VER = "xdp-ovpn_0.1.0"

_KEY = re.compile(r"[A-Za-z0-9_]+\Z")
_UNSAFE_VALUE = re.compile(r"[^\x21-\x7e]|[$(`]")
_LEADING_INT = re.compile(r"\s*([+-]?\d+)")
_ALL_BITS = sum(int(bit) for bit in IVProto)


def parse_peer_info(text: str | bytes) -> dict[str, str]:
    """Valid KEY=value lines as a dict; the first occurrence of a key wins, as with strstr."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    info: dict[str, str] = {}
    for raw in text.split("\n"):
        key, sep, value = raw.rstrip("\r").partition("=")
        if sep and _KEY.match(key) and key not in info:
            info[key] = _UNSAFE_VALUE.sub("_", value)
    return info


def build_peer_info(items: Mapping[str, str | int]) -> str:
    """Serialise peer-info lines in the given order; keys and values are checked."""
    lines = []
    for key, value in items.items():
        text = str(value)
        if not _KEY.match(key) or "\n" in text or "\0" in text:
            raise ValueError(f"invalid peer-info line {key}={text!r}")
        lines.append(f"{key}={text}\n")
    return "".join(lines)


def _c_int(value: str | None) -> int:
    """sscanf("%d") semantics: a leading integer, else 0."""
    m = _LEADING_INT.match(value or "")
    return int(m.group(1)) if m else 0


def iv_proto(info: Mapping[str, str]) -> IVProto:
    """The peer's IV_PROTO bits; 0 when absent or not positive (ssl_util.c: extract_iv_proto)."""
    value = _c_int(info.get("IV_PROTO"))
    return IVProto(value & _ALL_BITS) if value > 0 else IVProto(0)


def iv_ncp(info: Mapping[str, str]) -> int:
    """The peer's IV_NCP version, 0 when absent."""
    return _c_int(info.get("IV_NCP"))


def iv_ciphers(info: Mapping[str, str]) -> list[str] | None:
    """The peer's IV_CIPHERS list, None when it sent none."""
    value = info.get("IV_CIPHERS")
    return None if value is None else [c for c in value.split(":") if c]


def client_peer_info(
    data_ciphers: list[str] | tuple[str, ...],
    *,
    pull: bool = True,
    tun_mtu: int = 1500,
    version: str = DEFAULT_IV_VER,
    platform: str = "linux",
    proto: IVProto | None = None,
    epoch: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The peer-info a 2.6 client sends (push_peer_info, detail level 2); with `epoch`,
    2.7's IV_PROTO_DATA_EPOCH too (the data plane can do the epoch format).

    A server in p2mp mode sends no peer-info at all (detail 0).
    """
    info = {"IV_VER": version, "IV_PLAT": platform, "IV_TCPNL": "1"}
    if pull:
        info["IV_MTU"] = str(tun_mtu)
        # IV_NCP=2 promises the two AES-GCM ciphers to pre-IV_CIPHERS servers.
        if "AES-128-GCM" in data_ciphers and "AES-256-GCM" in data_ciphers:
            info["IV_NCP"] = "2"
    info["IV_CIPHERS"] = ":".join(data_ciphers)
    bits = proto if proto is not None else (CLIENT_IV_PROTO if pull else P2P_IV_PROTO)
    if epoch:
        bits |= IVProto.DATA_EPOCH
    info["IV_PROTO"] = str(int(bits))
    info["IV_GUI_VER"] = IV_GUI_VER
    if extra:
        info.update(extra)
    return info


def options_string(
    is_server: bool,
    *,
    cipher: str | None = None,
    tun_mtu: int = 1500,
    link_mtu: int | None = None,
    proto: str = "UDPv4",
    dev_type: str = "tun",
    tls_auth: bool = False,
) -> str:
    """The OCC options string sent in key method 2 (options.c: options_string, local side).

    Peers only compare it to log warnings, but a p2p peer takes its `cipher` as a hint.
    Without a cipher it reads like a 2.6 default (BF-CBC placeholder: auth SHA1, keysize 128).
    """
    if link_mtu is None:
        link_mtu = occ_link_mtu(tun_mtu, cipher, proto)
    parts = [
        "V4",
        f"dev-type {dev_type}",
        f"link-mtu {link_mtu}",
        f"tun-mtu {tun_mtu}",
        f"proto {proto}",
    ]
    if cipher is None:
        parts += ["auth SHA1", "keysize 128"]
    else:
        parts += [f"cipher {cipher}", "auth [null-digest]", f"keysize {cipher_key_len(cipher) * 8}"]
    if tls_auth:
        parts.append("tls-auth")
    parts += ["key-method 2", "tls-server" if is_server else "tls-client"]
    return ",".join(parts)


def occ_link_mtu(tun_mtu: int, cipher: str | None, proto: str = "UDPv4") -> int:
    """link-mtu as 2.6 reports it in OCC (mtu.c: calc_options_string_link_mtu).

    The figure counts bytes old peers reserved (IV and block size for AEAD), not the
    real overhead; it only has to look like openvpn's to keep warnings quiet.
    """
    overhead = 1  # opcode; 2.6 counts the peer-id only once it is in use
    if proto.startswith("TCP"):
        overhead += 2
    if cipher is None:  # BF-CBC placeholder: packet-id, IV 8, block 8, SHA1 20
        overhead += 4 + 8 + 8 + 20
    else:
        block = 1 if cipher.startswith("CHACHA20") else 16
        overhead += 4 + 16 + 12 + block  # packet-id, tag, IV, block
    return tun_mtu + overhead


def options_string_extract(options: str, name: str) -> str | None:
    """Value of an option in an options string (ssl_util.c: options_string_extract_option)."""
    prefix = name + " "
    for part in options.split(","):
        if part.startswith(prefix):
            return part[len(prefix) :]
    return None
