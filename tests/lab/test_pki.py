"""The throwaway PKI issues what openvpn's remote-cert-tls and CRL checks expect."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from xdp_ovpn.lab.pki import PKI, self_signed


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_server_and_client_certs_chain_to_ca_with_their_eku():
    pki = PKI()
    server, client = pki.server("srv"), pki.client("alice")
    for cred in (server, client):
        cred.cert.verify_directly_issued_by(pki.ca.cert)
    assert _eku(server.cert) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert _eku(client.cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ku = server.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment
    assert client.common_name == "alice"
    assert b"BEGIN CERTIFICATE" in client.cert_pem and b"PRIVATE KEY" in client.key_pem


def test_crl_lists_revoked_serials_only():
    pki = PKI()
    bad, good = pki.client("bad"), pki.client("good")
    pki.revoke(bad)
    pki.revoke(12345)
    crl = x509.load_pem_x509_crl(pki.crl_pem())
    assert crl.is_signature_valid(pki.ca.key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(bad.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(12345) is not None
    assert crl.get_revoked_certificate_by_serial_number(good.serial) is None


def test_write_puts_pem_files_in_directory(tmp_path):
    pki = PKI(key_type="rsa")
    cred = pki.server()
    paths = pki.write(tmp_path / "pki", cred)
    assert paths["ca"].read_bytes() == pki.ca_pem
    assert paths["cert"].read_bytes() == cred.cert_pem
    assert paths["key"].stat().st_mode & 0o077 == 0
    assert b"X509 CRL" in paths["crl"].read_bytes()


def test_self_signed_fingerprint_is_sha256_of_der():
    cred = self_signed("p2p-a")
    assert len(cred.fingerprint) == 32
    assert cred.fingerprint_hex.count(":") == 31
    assert cred.fingerprint_hex == cred.fingerprint_hex.upper()
