"""Options: the data channel (ciphers) and the control channel (TLS, wrapping keys,
certificate checks, credentials)."""

from __future__ import annotations

from xdp_ovpn.config.lexer import Directive
from xdp_ovpn.config.model import ConfigError, TLSWrap, Wrapping
from xdp_ovpn.config.registry import AEAD_HINT, NOT_YET, Parser, handles
from xdp_ovpn.proto.constants import (
    AEAD_CIPHERS,
)

# ---------------------------------------------------------------- data channel


def _cipher_name(name: str) -> str:
    return name.upper()


def _aead(d: Directive, name: str) -> str:
    norm = _cipher_name(name)
    if norm not in AEAD_CIPHERS:
        raise ConfigError(f"{name} is not an AEAD cipher; {AEAD_HINT}", d.name, d.where)
    return norm


@handles("data-ciphers", "ncp-ciphers", min_args=1, max_args=1, fields=("data_ciphers",))
def _data_ciphers(p: Parser, d: Directive) -> None:
    names = []
    for entry in d.args[0].split(":"):
        if entry.startswith("?"):
            # 2.6 optional entry: dropped when unavailable, as openvpn does.
            if _cipher_name(entry[1:]) in AEAD_CIPHERS:
                names.append(_cipher_name(entry[1:]))
        elif entry:
            names.append(_aead(d, entry))
    if not names:
        raise ConfigError("no usable cipher in the list", d.name, d.where)
    p.cfg.data_ciphers = tuple(dict.fromkeys(names))


@handles("data-ciphers-fallback", min_args=1, max_args=1, fields=("data_ciphers_fallback",))
def _data_ciphers_fallback(p: Parser, d: Directive) -> None:
    p.cfg.data_ciphers_fallback = _aead(d, d.args[0])


@handles("cipher", min_args=1, max_args=1, fields=("cipher",))
def _cipher(p: Parser, d: Directive) -> None:
    # Checked in finish: openvpn 2.6 ignores --cipher for negotiation with pull or a server.
    p.cfg.cipher = _cipher_name(d.args[0])


@handles("auth", min_args=1, max_args=1, fields=("auth",))
def _auth(p: Parser, d: Directive) -> None:
    p.cfg.auth = d.args[0].upper()


@handles("allow-compression", min_args=1, max_args=1)
def _allow_compression(p: Parser, d: Directive) -> None:
    if d.args[0] != "no":
        raise ConfigError(
            "compression is not supported by the DCO-style data path; use 'allow-compression no'",
            f"allow-compression {d.args[0]}",
            d.where,
        )


@handles("auth-retry", min_args=1, max_args=1)
def _auth_retry(p: Parser, d: Directive) -> None:
    if d.args[0] != "none":
        raise ConfigError(
            f"{NOT_YET}: an AUTH_FAILED ends the client, as with 'auth-retry none'",
            f"auth-retry {d.args[0]}",
            d.where,
        )


# ---------------------------------------------------------------- control channel


def _direction(d: Directive, value: str) -> int | None:
    if value in ("0", "1"):
        return int(value)
    if value == "bidirectional":
        return None
    raise ConfigError(f"key direction must be 0 or 1, not {value!r}", d.name, d.where)


def _set_wrap(p: Parser, d: Directive, wrap: TLSWrap) -> None:
    if p.cfg.tls_wrap is not None and p.cfg.tls_wrap.mode != wrap.mode:
        raise ConfigError(f"cannot be combined with {p.cfg.tls_wrap.mode}", d.name, d.where)
    p.cfg.tls_wrap = wrap


@handles("tls-auth", min_args=1, max_args=2, fields=("tls_wrap",))
def _tls_auth(p: Parser, d: Directive) -> None:
    key, path = p.read(d)
    explicit = len(d.args) > 1 and not d.inline
    # Without a direction argument, key-direction applies wherever it appears (see finish).
    p.tls_auth_direction_given = explicit
    direction = _direction(d, d.args[1]) if explicit else None
    _set_wrap(p, d, TLSWrap(Wrapping.TLS_AUTH, key, direction, path))


@handles("key-direction", min_args=1, max_args=1, fields=("tls_wrap",))
def _key_direction(p: Parser, d: Directive) -> None:
    p.cfg.key_direction = _direction(d, d.args[0])


@handles("tls-crypt", min_args=1, max_args=1, fields=("tls_wrap",))
def _tls_crypt(p: Parser, d: Directive) -> None:
    key, path = p.read(d)
    _set_wrap(p, d, TLSWrap(Wrapping.TLS_CRYPT, key, None, path))


@handles("tls-crypt-v2", min_args=1, max_args=2, fields=("tls_wrap",))
def _tls_crypt_v2(p: Parser, d: Directive) -> None:
    key, path = p.read(d)
    extra = d.args[1] if len(d.args) > 1 and not d.inline else "force-cookie"
    if extra not in ("force-cookie", "allow-noncookie"):
        raise ConfigError(f"unknown argument {extra!r}", d.name, d.where)
    wrap = TLSWrap(Wrapping.TLS_CRYPT_V2, key, None, path, extra == "force-cookie")
    _set_wrap(p, d, wrap)


def _pem_option(name: str, attr: str) -> None:
    def handler(p: Parser, d: Directive) -> None:
        setattr(p.cfg, attr, p.read(d)[0])

    handles(name, min_args=1, max_args=1, fields=(attr,))(handler)


for _name, _attr in (
    ("ca", "ca"),
    ("cert", "cert"),
    ("key", "key"),
    ("extra-certs", "extra_certs"),
):
    _pem_option(_name, _attr)


@handles("crl-verify", min_args=1, max_args=2, fields=("crl_path", "crl"))
def _crl_verify(p: Parser, d: Directive) -> None:
    if len(d.args) > 1 and not d.inline:
        raise ConfigError("the 'dir' form is not supported; give a CRL file", d.name, d.where)
    p.cfg.crl, p.cfg.crl_path = p.read(d)


@handles("remote-cert-ku", min_args=0, max_args=16, fields=("remote_cert_ku",))
def _remote_cert_ku(p: Parser, d: Directive) -> None:
    try:
        p.cfg.remote_cert_ku = tuple(int(v, 16) for v in d.args)
    except ValueError:
        raise ConfigError("key usage values are hex numbers", d.name, d.where) from None


@handles("verify-x509-name", min_args=1, max_args=2, fields=("verify_x509_name",))
def _verify_x509_name(p: Parser, d: Directive) -> None:
    kind = d.args[1] if len(d.args) > 1 else "subject"
    if kind not in ("subject", "name", "name-prefix"):
        raise ConfigError(f"unknown X.509 name type {kind!r}", d.name, d.where)
    p.cfg.verify_x509_name = (d.args[0], kind)


@handles("peer-fingerprint", min_args=1, max_args=1, fields=("peer_fingerprints",))
def _peer_fingerprint(p: Parser, d: Directive) -> None:
    for line in d.args[0].splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        try:
            digest = bytes.fromhex(line.replace(":", ""))
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConfigError(f"{line!r} is not a SHA-256 fingerprint (AB:CD:...)", d.name, d.where)
        p.cfg.peer_fingerprints.append(digest)


@handles("auth-user-pass", min_args=0, max_args=1, fields=("auth_user_pass",))
def _auth_user_pass(p: Parser, d: Directive) -> None:
    if not d.args:
        raise ConfigError(
            "needs a file or an inline block (xdp-ovpn does not prompt)", d.name, d.where
        )
    lines = p.read(d)[0].decode("utf-8", "replace").splitlines()
    if len(lines) < 2 or not lines[0]:
        raise ConfigError("needs a username line and a password line", d.name, d.where)
    p.cfg.auth_user_pass = (lines[0], lines[1])
