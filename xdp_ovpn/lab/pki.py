"""A throwaway PKI for tests and the lab: CA, server and client certificates, CRL.

Certificates carry what `remote-cert-tls` checks (keyUsage and extendedKeyUsage),
so a stock `openvpn` accepts them exactly as it would an easy-rsa PKI.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_PEM = serialization.Encoding.PEM
_ONE_DAY = datetime.timedelta(days=1)


def _new_key(key_type: str) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r} (ec or rsa)")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(_PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Credential:
    """A certificate and its private key, in PEM."""

    common_name: str
    serial: int
    cert: x509.Certificate
    key: PrivateKey = field(repr=False)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(_PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    @property
    def fingerprint(self) -> bytes:
        """SHA-256 of the DER certificate (what `peer-fingerprint` pins)."""
        return self.cert.fingerprint(hashes.SHA256())

    @property
    def fingerprint_hex(self) -> str:
        """The fingerprint as openvpn writes it: colon-separated upper-case hex."""
        return ":".join(f"{b:02X}" for b in self.fingerprint)


def _builder(
    subject: str, issuer: x509.Name, key: PrivateKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _key_usage(*, cert_sign: bool = False, key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def self_signed(common_name: str, key_type: str = "ec", days: int = 30) -> Credential:
    """A self-signed leaf certificate, for `peer-fingerprint` setups without a CA."""
    key = _new_key(key_type)
    cert = (
        _builder(common_name, _name(common_name), key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key_encipherment=key_type == "rsa"), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return Credential(common_name, cert.serial_number, cert, key)


class PKI:
    """A CA that issues server and client certificates and a CRL.

    >>> pki = PKI()
    >>> server = pki.server("server")
    >>> alice = pki.client("alice")
    >>> pki.revoke(alice)
    >>> crl = pki.crl_pem()
    """

    def __init__(self, ca_name: str = "xdp-ovpn test CA", key_type: str = "ec", days: int = 30):
        self.key_type = key_type
        self.days = days
        key = _new_key(key_type)
        cert = (
            _builder(ca_name, _name(ca_name), key, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        self.ca = Credential(ca_name, cert.serial_number, cert, key)
        self.issued: dict[str, Credential] = {}
        self.revoked: dict[int, datetime.datetime] = {}

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    def _issue(self, common_name: str, eku: x509.ObjectIdentifier) -> Credential:
        key = _new_key(self.key_type)
        ca_key_id = x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca.key.public_key())
        cert = (
            _builder(common_name, self.ca.cert.subject, key, self.days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(key_encipherment=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(ca_key_id, critical=False)
            .sign(self.ca.key, hashes.SHA256())
        )
        cred = Credential(common_name, cert.serial_number, cert, key)
        self.issued[common_name] = cred
        return cred

    def server(self, common_name: str = "server") -> Credential:
        """A server certificate: EKU serverAuth, keyUsage digitalSignature + keyEncipherment."""
        return self._issue(common_name, ExtendedKeyUsageOID.SERVER_AUTH)

    def client(self, common_name: str = "client") -> Credential:
        """A client certificate: EKU clientAuth."""
        return self._issue(common_name, ExtendedKeyUsageOID.CLIENT_AUTH)

    def revoke(self, cred: Credential | int) -> None:
        """Put a certificate (or a bare serial) on the next CRL."""
        serial = cred if isinstance(cred, int) else cred.serial
        self.revoked[serial] = datetime.datetime.now(datetime.UTC) - _ONE_DAY

    def crl(self) -> x509.CertificateRevocationList:
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.ca.cert.subject)
            .last_update(now - _ONE_DAY)
            .next_update(now + datetime.timedelta(days=self.days))
        )
        for serial, when in self.revoked.items():
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self.ca.key, hashes.SHA256())

    def crl_pem(self) -> bytes:
        return self.crl().public_bytes(_PEM)

    def write(self, directory: str | Path, cred: Credential | None = None) -> dict[str, Path]:
        """Write ca.crt and crl.pem, and `cred`'s <cn>.crt/<cn>.key (mode 0600) into directory.

        Returns the paths by role: "ca", "crl", and "cert"/"key" when cred is given.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"ca": out / "ca.crt", "crl": out / "crl.pem"}
        paths["ca"].write_bytes(self.ca_pem)
        paths["crl"].write_bytes(self.crl_pem())
        if cred is not None:
            paths["cert"] = out / f"{cred.common_name}.crt"
            paths["key"] = out / f"{cred.common_name}.key"
            paths["cert"].write_bytes(cred.cert_pem)
            paths["key"].touch(mode=0o600)
            paths["key"].write_bytes(cred.key_pem)
        return paths
