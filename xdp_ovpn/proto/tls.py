"""TLS for the control channel over memory BIOs, verifying peers the way openvpn does.

Records go in with `receive()` and come out with `data_to_send()`; no socket is
involved. Peer verification follows openvpn 2.6 (ssl_verify.c,
ssl_verify_openssl.c): the CA chain (missing CRLs for intermediate CAs are
tolerated), `--remote-cert-tls` (keyUsage present + EKU), `--remote-cert-ku`,
`--remote-cert-eku`, `--verify-x509-name` (subject / name / name-prefix),
`--peer-fingerprint` (SHA-256 of the leaf; without a CA the chain is not
checked at all), and `--crl-verify` (CRL_CHECK | CRL_CHECK_ALL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from OpenSSL._util import lib as _openssl

from xdp_ovpn.proto.errors import TLSError

X509NameType = Literal["subject", "name", "name-prefix"]

_TLS_VERSIONS = {
    "1.0": SSL.TLS1_VERSION,
    "1.1": SSL.TLS1_1_VERSION,
    "1.2": SSL.TLS1_2_VERSION,
    "1.3": SSL.TLS1_3_VERSION,
}
# openvpn refuses chains deeper than this (ssl_verify.h MAX_CERT_DEPTH).
MAX_CERT_DEPTH = 16
_READ_CHUNK = 16384

# X509_V_ERR_* codes worth a readable reason; others print as the number.
_X509_ERRORS = {
    2: "unable to get issuer certificate",
    3: "unable to get certificate CRL",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    23: "certificate revoked",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}
_X509_V_ERR_UNABLE_TO_GET_CRL = 3

# OpenSSL's long names, which openvpn compares --remote-cert-eku against.
_EKU_LONG_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "TLS Web Server Authentication",
    ExtendedKeyUsageOID.CLIENT_AUTH: "TLS Web Client Authentication",
    ExtendedKeyUsageOID.CODE_SIGNING: "Code Signing",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "E-mail Protection",
    ExtendedKeyUsageOID.TIME_STAMPING: "Time Stamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSP Signing",
}
_REMOTE_CERT_TLS_EKU = {
    "server": "TLS Web Server Authentication",
    "client": "TLS Web Client Authentication",
}
# Short names OpenSSL prints in a subject (XN_FLAG_FN_SN).
_SHORT_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "title",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.STREET_ADDRESS: "street",
    NameOID.POSTAL_CODE: "postalCode",
}


@dataclass(frozen=True)
class TLSConfig:
    """Certificates and peer checks for one side of the control channel.

    `cert_pem` may hold a chain (leaf first). `verify_x509_name` is
    (name, type) as in `--verify-x509-name name type`. `peer_fingerprints` are
    SHA-256 digests of the peer's DER certificate; with no `ca_pem` they
    replace CA verification (openvpn's peer-fingerprint mode).
    `remote_cert_ku` lists acceptable keyUsage bit masks (hex in openvpn's
    syntax); an empty tuple only requires the extension.
    """

    ca_pem: bytes | None
    cert_pem: bytes
    key_pem: bytes
    crl_pem: bytes | None = None
    remote_cert_tls: Literal["server", "client"] | None = None
    verify_x509_name: tuple[str, X509NameType] | None = None
    peer_fingerprints: list[bytes] | None = None
    tls_version_min: str | None = None
    tls_version_max: str | None = None
    remote_cert_ku: tuple[int, ...] | None = None
    remote_cert_eku: str | None = None
    # tls-server only: refuse clients without a certificate (verify-client-cert require).
    require_peer_cert: bool = True
    # tls-server only: False does not even ask for one (verify-client-cert none).
    request_peer_cert: bool = True
    # openvpn's tls-cipher (TLS 1.2 and below), tls-ciphersuites (TLS 1.3) and tls-groups,
    # in OpenSSL's syntax.
    tls_cipher: str | None = None
    tls_ciphersuites: str | None = None
    tls_groups: str | None = None
    # The current CRL, asked for at each handshake (crl-verify's file is re-read by the
    # caller when it changes); overrides crl_pem.
    crl_source: Callable[[], bytes | None] | None = None


class TLSPolicyError(TLSError):
    """A cipher or group setting OpenSSL does not accept; `option` names the setting."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option, self.reason = option, reason


def apply_policy(ctx: SSL.Context, config: TLSConfig) -> None:
    """tls-cipher, tls-ciphersuites and tls-groups on a context (ssl_openssl.c)."""
    for option, value, setter in (
        ("tls-cipher", config.tls_cipher, ctx.set_cipher_list),
        ("tls-ciphersuites", config.tls_ciphersuites, ctx.set_tls13_ciphersuites),
    ):
        try:
            if value:
                setter(value.encode())
        except SSL.Error:
            raise TLSPolicyError(option, f"OpenSSL knows none of {value!r} (use OpenSSL names)"
                                 ) from None
    # pyOpenSSL has no groups call; SSL_CTX_set1_curves_list is the same one in OpenSSL
    # 1.1.1 and later (curves were renamed groups).
    if config.tls_groups and _openssl.SSL_CTX_set1_curves_list(
        ctx._context, config.tls_groups.encode()
    ) != 1:
        _openssl.ERR_clear_error()
        raise TLSPolicyError("tls-groups", f"OpenSSL does not accept {config.tls_groups!r}")


def check_policy(config: TLSConfig) -> None:
    """Raise TLSPolicyError now for a policy that every handshake would fail on."""
    apply_policy(SSL.Context(SSL.TLS_METHOD), config)


@dataclass(frozen=True)
class PeerCertificate:
    """What verification learned about the peer's leaf certificate."""

    common_name: str
    subject: str
    sha256: bytes
    serial: int


def x509_subject(name: x509.Name) -> str:
    """The subject the way openvpn prints and compares it: "C=XX, O=org, CN=name"."""
    parts = []
    for rdn in name.rdns:
        attrs = [f"{_SHORT_NAMES.get(a.oid, a.oid.dotted_string)}={a.value}" for a in rdn]
        parts.append(" + ".join(attrs))
    text = _remap_name(", ".join(parts))
    stripped = text.lstrip("-")  # string_replace_leading(subject, '-', '_')
    return "_" * (len(text) - len(stripped)) + stripped


def _remap_name(text: str) -> str:
    # openvpn's string_mod_remap_name: non-printable characters become '_'.
    return "".join(c if c.isprintable() else "_" for c in text)


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        raise TLSError("peer certificate has no common name")
    return _remap_name(str(attrs[0].value))


def _key_usage_bits(cert: x509.Certificate) -> int | None:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    flags = [
        ku.digital_signature,
        ku.content_commitment,
        ku.key_encipherment,
        ku.data_encipherment,
        ku.key_agreement,
        ku.key_cert_sign,
        ku.crl_sign,
        ku.key_agreement and ku.encipher_only,
    ]
    # Same layout openvpn builds: bit i of the ASN.1 string -> 1 << (7 - i).
    return sum(1 << (7 - i) for i, on in enumerate(flags) if on)


def _eku_names(cert: x509.Certificate) -> set[str]:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    names = set()
    for oid in eku:
        names.add(oid.dotted_string)
        if oid in _EKU_LONG_NAMES:
            names.add(_EKU_LONG_NAMES[oid])
    return names


def verify_peer_fields(config: TLSConfig, cert: x509.Certificate) -> None:
    """Check keyUsage, EKU and verify-x509-name of the peer's leaf (ssl_verify.c)."""
    required_ku = config.remote_cert_ku
    required_eku = config.remote_cert_eku
    if config.remote_cert_tls is not None:
        required_ku = required_ku if required_ku is not None else ()
        required_eku = required_eku or _REMOTE_CERT_TLS_EKU[config.remote_cert_tls]
    if required_ku is not None:
        bits = _key_usage_bits(cert)
        if bits is None:
            raise TLSError("peer certificate has no key usage extension")
        if required_ku and not any(m and bits & m == m for m in required_ku):
            raise TLSError(f"peer certificate has key usage {bits:04x}")
    if required_eku is not None and required_eku not in _eku_names(cert):
        raise TLSError(f"peer certificate lacks extended key usage {required_eku!r}")
    if config.verify_x509_name is not None:
        name, kind = config.verify_x509_name
        cn = _common_name(cert)
        subject = x509_subject(cert.subject)
        ok = (
            (kind == "subject" and subject == name)
            or (kind == "name" and cn == name)
            or (kind == "name-prefix" and cn.startswith(name))
        )
        if not ok:
            raise TLSError(f"peer certificate {subject!r} does not match {name!r}")


def _load_certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise TLSError(f"bad certificate PEM: {exc}") from None


def build_context(config: TLSConfig, is_server: bool) -> SSL.Context:
    """An SSL context configured like openvpn's (tls_ctx_set_options)."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_options(
        SSL.OP_NO_TICKET | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_COMPRESSION
        | SSL.OP_NO_RENEGOTIATION
    )
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    try:
        ctx.set_min_proto_version(_TLS_VERSIONS[config.tls_version_min or "1.2"])
        if config.tls_version_max:
            ctx.set_max_proto_version(_TLS_VERSIONS[config.tls_version_max])
    except KeyError as exc:
        raise TLSError(f"unknown TLS version {exc.args[0]}") from None
    apply_policy(ctx, config)
    chain = _load_certs(config.cert_pem)
    if not chain:
        raise TLSError("no certificate in cert PEM")
    try:
        key = serialization.load_pem_private_key(config.key_pem, password=None)
        ctx.use_certificate(chain[0])
        ctx.use_privatekey(key)  # type: ignore[arg-type]
        ctx.check_privatekey()
        for extra in chain[1:]:
            ctx.add_extra_chain_cert(extra)
    except (ValueError, TypeError, SSL.Error) as exc:
        raise TLSError(f"bad certificate or key: {exc}") from None
    store = ctx.get_cert_store()
    assert store is not None
    if config.ca_pem:
        for ca in _load_certs(config.ca_pem):
            store.add_cert(crypto.X509.from_cryptography(ca))
    crl_pem = config.crl_source() if config.crl_source else config.crl_pem
    if crl_pem:
        try:
            crl = x509.load_pem_x509_crl(crl_pem)
        except ValueError as exc:
            raise TLSError(f"bad CRL: {exc}") from None
        store.add_crl(crl)
        store.set_flags(crypto.X509StoreFlags.CRL_CHECK | crypto.X509StoreFlags.CRL_CHECK_ALL)
    mode = SSL.VERIFY_PEER
    if config.require_peer_cert or not is_server:
        mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
    elif not config.request_peer_cert:
        mode = SSL.VERIFY_NONE
    ctx.set_verify(mode, _verify_callback)
    return ctx


def _verify_callback(
    conn: SSL.Connection, cert: crypto.X509, errnum: int, depth: int, ok: int
) -> bool:
    owner: TLSConnection = conn.get_app_data()
    try:
        owner._verify(cert.to_cryptography(), errnum, depth, bool(ok))
    except TLSError as exc:
        owner._verify_error = str(exc)
        return False
    except Exception as exc:  # a callback must never raise into OpenSSL
        owner._verify_error = f"verification error: {exc}"
        return False
    return True


class TLSConnection:
    """One TLS session (one openvpn key state) driven through memory BIOs."""

    def __init__(
        self, config: TLSConfig, is_server: bool, context: SSL.Context | None = None
    ) -> None:
        self.config = config
        self.is_server = is_server
        self._fingerprint_only = bool(config.peer_fingerprints) and not config.ca_pem
        if not config.ca_pem and not config.peer_fingerprints:
            raise TLSError("need a CA or peer fingerprints to verify the peer")
        self._conn = SSL.Connection(context or build_context(config, is_server), None)
        self._conn.set_app_data(self)
        if is_server:
            self._conn.set_accept_state()
        else:
            self._conn.set_connect_state()
        self._pending_writes: list[bytes] = []
        self._records: list[bytes] = []
        self._verify_error: str | None = None
        self.handshake_complete = False
        self.peer_certificate: PeerCertificate | None = None
        self.closed = False

    # --- verification (called from OpenSSL for every certificate in the chain)

    def _verify(self, cert: x509.Certificate, errnum: int, depth: int, ok: bool) -> None:
        if not ok and not self._fingerprint_only:
            if errnum == _X509_V_ERR_UNABLE_TO_GET_CRL:
                return  # openvpn logs and ignores CAs without a CRL
            reason = _X509_ERRORS.get(errnum, f"X509 error {errnum}")
            raise TLSError(f"VERIFY ERROR depth={depth}: {reason}: {x509_subject(cert.subject)}")
        if depth >= MAX_CERT_DEPTH:
            raise TLSError(f"certificate chain deeper than {MAX_CERT_DEPTH}")
        if depth != 0:
            return
        digest = cert.fingerprint(hashes.SHA256())
        pins = self.config.peer_fingerprints
        if pins is not None and digest not in pins:
            raise TLSError(f"peer fingerprint {digest.hex(':')} not pinned")
        verify_peer_fields(self.config, cert)
        self.peer_certificate = PeerCertificate(
            common_name=_common_name(cert),
            subject=x509_subject(cert.subject),
            sha256=digest,
            serial=cert.serial_number,
        )

    # --- records in and out

    def receive(self, records: bytes) -> None:
        """Feed TLS records from the peer; raises TLSError when TLS fails."""
        if self.closed:
            raise TLSError("TLS connection closed")
        if records:
            self._conn.bio_write(records)
        self._drive()

    def data_to_send(self) -> bytes:
        """TLS records to send to the peer (starts the handshake on a client)."""
        if not self.closed:
            self._drive()
        out = bytearray()
        while True:
            try:
                out += self._conn.bio_read(_READ_CHUNK)
            except SSL.WantReadError:
                break
        return bytes(out)

    def write_plaintext(self, data: bytes) -> None:
        """Queue one application message; it becomes its own TLS record."""
        self._pending_writes.append(bytes(data))
        if self.handshake_complete:
            self._flush_writes()

    def read_plaintext(self) -> bytes:
        """All application data received so far."""
        data = b"".join(self._records)
        self._records.clear()
        return data

    def read_records(self) -> list[bytes]:
        """Application data received so far, one entry per TLS record read."""
        records, self._records = self._records, []
        return records

    def export_keying_material(self, label: bytes, length: int) -> bytes:
        """RFC 5705 exporter without context, as openvpn uses it."""
        if not self.handshake_complete:
            raise TLSError("keying material before the handshake completed")
        try:
            return self._conn.export_keying_material(label, length)
        except SSL.Error as exc:
            raise TLSError(f"keying material export failed: {exc}") from None

    def peer_chain_der(self) -> tuple[bytes, ...]:
        """The verified peer chain as DER, leaf (depth 0) first; empty without a certificate."""
        if not self.handshake_complete or self.peer_certificate is None:
            return ()
        chain = self._conn.get_verified_chain() or []
        return tuple(crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in chain)

    @property
    def protocol_version(self) -> str | None:
        return self._conn.get_protocol_version_name() if self.handshake_complete else None

    @property
    def cipher_name(self) -> str | None:
        return self._conn.get_cipher_name() if self.handshake_complete else None

    # --- internals

    def _drive(self) -> None:
        try:
            if not self.handshake_complete:
                try:
                    self._conn.do_handshake()
                except SSL.WantReadError:
                    return
                self._handshake_done()
            self._flush_writes()
            while True:
                try:
                    chunk = self._conn.recv(_READ_CHUNK)
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:
                    self.closed = True
                    raise TLSError("peer closed the TLS session") from None
                if chunk:
                    self._records.append(chunk)
        except SSL.Error as exc:
            self.closed = True
            raise TLSError(self._verify_error or f"TLS error: {_ssl_reason(exc)}") from None

    def _handshake_done(self) -> None:
        if self.peer_certificate is None and (self.config.require_peer_cert or not self.is_server):
            # The verify callback ran for every chain element; no leaf means no cert.
            self.closed = True
            raise TLSError("peer presented no certificate")
        self.handshake_complete = True

    def _flush_writes(self) -> None:
        while self._pending_writes:
            self._conn.sendall(self._pending_writes.pop(0))


def _ssl_reason(exc: SSL.Error) -> str:
    details = exc.args[0] if exc.args else None
    if isinstance(details, list) and details:
        return "; ".join(str(item[-1]) for item in details if item)
    return str(exc) or type(exc).__name__
