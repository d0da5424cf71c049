"""TLS over memory BIOs: handshakes, openvpn-style peer verification, EKM."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xdp_ovpn.config import ConfigError, parse_text
from xdp_ovpn.control.sessionconfig import CrlFile, tls_config
from xdp_ovpn.lab.pki import PKI, Credential, self_signed
from xdp_ovpn.proto.constants import TLS_EKM_LABEL
from xdp_ovpn.proto.errors import TLSError
from xdp_ovpn.proto.tls import TLSConfig, TLSConnection, x509_subject


def odd_leaf(
    pki: PKI,
    cn: str,
    *,
    eku: x509.ObjectIdentifier | None = ExtendedKeyUsageOID.CLIENT_AUTH,
    key_usage: bool = True,
    not_before: dt.datetime | None = None,
    days: int = 30,
) -> Credential:
    """A leaf signed by `pki`'s CA with the given deviations."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(pki.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
    )
    if key_usage:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
    cert = builder.sign(pki.ca.key, hashes.SHA256())
    return Credential(cn, cert.serial_number, cert, key)


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


@pytest.fixture(scope="module")
def server_ck(pki: PKI) -> Credential:
    return pki.server("server")


@pytest.fixture(scope="module")
def client_ck(pki: PKI) -> Credential:
    return pki.client("client-1")


def config(ca: bytes | None, ck: Credential, **kw) -> TLSConfig:
    return TLSConfig(ca_pem=ca, cert_pem=ck.cert_pem, key_pem=ck.key_pem, **kw)


def pump(client: TLSConnection, server: TLSConnection) -> None:
    """Move records both ways until neither side has anything to send."""
    for _ in range(20):
        c2s = client.data_to_send()
        if c2s:
            server.receive(c2s)
        s2c = server.data_to_send()
        if s2c:
            client.receive(s2c)
        if not c2s and not s2c:
            return
    raise AssertionError("handshake did not settle")


def handshake(ccfg: TLSConfig, scfg: TLSConfig) -> tuple[TLSConnection, TLSConnection]:
    client, server = TLSConnection(ccfg, is_server=False), TLSConnection(scfg, is_server=True)
    pump(client, server)
    return client, server


def test_handshake_with_remote_cert_tls_exports_equal_keying_material(pki, server_ck, client_ck):
    client, server = handshake(
        config(pki.ca_pem, client_ck, remote_cert_tls="server"),
        config(pki.ca_pem, server_ck, remote_cert_tls="client"),
    )
    assert client.handshake_complete and server.handshake_complete
    assert client.peer_certificate.common_name == "server"
    assert server.peer_certificate.common_name == "client-1"
    assert server.peer_certificate.sha256 == client_ck.fingerprint
    ekm = client.export_keying_material(TLS_EKM_LABEL, 256)
    assert len(ekm) == 256
    assert ekm == server.export_keying_material(TLS_EKM_LABEL, 256)
    assert client.protocol_version == "TLSv1.3"


def test_plaintext_messages_keep_record_boundaries(pki, server_ck, client_ck):
    client = TLSConnection(config(pki.ca_pem, client_ck), is_server=False)
    server = TLSConnection(config(pki.ca_pem, server_ck), is_server=True)
    # Written before the handshake finished: queued, then sent as separate records.
    client.write_plaintext(b"first\x00")
    client.write_plaintext(b"second\x00")
    pump(client, server)
    assert server.read_records() == [b"first\x00", b"second\x00"]
    server.write_plaintext(b"reply\x00")
    pump(client, server)
    assert client.read_plaintext() == b"reply\x00"
    assert client.read_plaintext() == b""


def test_tls12_ekm_matches(pki, server_ck, client_ck):
    client, server = handshake(
        config(pki.ca_pem, client_ck, tls_version_max="1.2"), config(pki.ca_pem, server_ck)
    )
    assert client.protocol_version == "TLSv1.2"
    assert client.export_keying_material(TLS_EKM_LABEL, 64) == server.export_keying_material(
        TLS_EKM_LABEL, 64
    )


def test_keying_material_before_handshake_is_an_error(pki, client_ck):
    conn = TLSConnection(config(pki.ca_pem, client_ck), is_server=False)
    with pytest.raises(TLSError):
        conn.export_keying_material(TLS_EKM_LABEL, 256)


def test_unknown_ca_is_rejected(pki, server_ck, client_ck):
    other = PKI("other CA")
    with pytest.raises(TLSError, match="VERIFY ERROR"):
        handshake(config(other.ca_pem, client_ck), config(pki.ca_pem, server_ck))


def test_remote_cert_tls_server_rejects_client_certificate(pki, client_ck):
    # A client certificate posing as a server: EKU is clientAuth only. OpenSSL's
    # default purpose check catches it before openvpn's EKU check, as in openvpn.
    impostor = pki.client("server")
    with pytest.raises(TLSError, match=r"purpose|TLS Web Server Authentication"):
        handshake(
            config(pki.ca_pem, client_ck, remote_cert_tls="server"),
            config(pki.ca_pem, impostor),
        )


def test_remote_cert_tls_requires_key_usage(pki, server_ck):
    no_ku = odd_leaf(pki, "client-2", key_usage=False)
    with pytest.raises(TLSError):
        handshake(
            config(pki.ca_pem, no_ku), config(pki.ca_pem, server_ck, remote_cert_tls="client")
        )


def test_remote_cert_ku_masks(pki, server_ck, client_ck):
    # Lab leaves carry digitalSignature (0x80) and keyEncipherment (0x20).
    handshake(config(pki.ca_pem, client_ck, remote_cert_ku=(0xA0,)), config(pki.ca_pem, server_ck))
    with pytest.raises(TLSError, match="key usage"):
        handshake(
            config(pki.ca_pem, client_ck, remote_cert_ku=(0x88,)), config(pki.ca_pem, server_ck)
        )


def test_remote_cert_eku_by_oid(pki, server_ck, client_ck):
    handshake(
        config(pki.ca_pem, client_ck, remote_cert_eku="1.3.6.1.5.5.7.3.1"),
        config(pki.ca_pem, server_ck),
    )


@pytest.mark.parametrize(
    ("name", "kind", "ok"),
    [
        ("server", "name", True),
        ("serv", "name", False),
        ("serv", "name-prefix", True),
        ("client", "name-prefix", False),
        ("CN=server", "subject", True),
        ("CN=serv", "subject", False),
    ],
)
def test_verify_x509_name(pki, server_ck, client_ck, name, kind, ok):
    ccfg = config(pki.ca_pem, client_ck, verify_x509_name=(name, kind))
    if ok:
        handshake(ccfg, config(pki.ca_pem, server_ck))
    else:
        with pytest.raises(TLSError):
            handshake(ccfg, config(pki.ca_pem, server_ck))


def test_subject_string_format():
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "XX"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xdp-ovpn"),
            x509.NameAttribute(NameOID.COMMON_NAME, "server"),
        ]
    )
    assert x509_subject(name) == "C=XX, O=xdp-ovpn, CN=server"


def test_peer_fingerprint_without_ca():
    srv, cli = self_signed("p2p-server"), self_signed("p2p-client")
    client, server = handshake(
        config(None, cli, peer_fingerprints=[srv.fingerprint]),
        config(None, srv, peer_fingerprints=[b"\x00" * 32, cli.fingerprint]),
    )
    assert client.peer_certificate.common_name == "p2p-server"
    assert server.peer_certificate.common_name == "p2p-client"


def test_peer_fingerprint_mismatch_is_rejected():
    srv, cli = self_signed("p2p-server"), self_signed("p2p-client")
    with pytest.raises(TLSError, match="not pinned"):
        handshake(
            config(None, cli, peer_fingerprints=[cli.fingerprint]),
            config(None, srv, peer_fingerprints=[cli.fingerprint]),
        )


def test_peer_fingerprint_with_ca_still_checks_the_chain(pki, server_ck, client_ck):
    other = PKI("other CA")
    with pytest.raises(TLSError, match="VERIFY ERROR"):
        handshake(
            config(other.ca_pem, client_ck, peer_fingerprints=[server_ck.fingerprint]),
            config(pki.ca_pem, server_ck),
        )


def test_no_ca_and_no_fingerprint_is_a_config_error(client_ck):
    with pytest.raises(TLSError):
        TLSConnection(config(None, client_ck), is_server=False)


def test_crl_rejects_revoked_client():
    pki = PKI()
    server_ck = pki.server()
    revoked = pki.client("revoked-client")
    pki.revoke(revoked)
    crl = pki.crl_pem()
    with pytest.raises(TLSError, match="revoked"):
        handshake(config(pki.ca_pem, revoked), config(pki.ca_pem, server_ck, crl_pem=crl))


def test_crl_accepts_unrevoked_client(pki, server_ck, client_ck):
    pki.revoke(12345)
    crl = pki.crl_pem()
    _, server = handshake(config(pki.ca_pem, client_ck), config(pki.ca_pem, server_ck, crl_pem=crl))
    assert server.peer_certificate.common_name == "client-1"


def test_crl_of_another_ca_is_tolerated_like_openvpn(pki, server_ck, client_ck):
    # openvpn ignores "unable to get certificate CRL" (verify_callback).
    crl = PKI("other CA").crl_pem()
    handshake(config(pki.ca_pem, client_ck), config(pki.ca_pem, server_ck, crl_pem=crl))


def test_expired_certificate_is_rejected(pki, server_ck):
    old = odd_leaf(
        pki, "old-client", days=1, not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    )
    with pytest.raises(TLSError, match="expired"):
        handshake(config(pki.ca_pem, old), config(pki.ca_pem, server_ck))


def test_tls_version_mismatch_fails(pki, server_ck, client_ck):
    with pytest.raises(TLSError):
        handshake(
            config(pki.ca_pem, client_ck, tls_version_min="1.3"),
            config(pki.ca_pem, server_ck, tls_version_max="1.2"),
        )


def test_garbage_records_raise_tls_error(pki, server_ck):
    server = TLSConnection(config(pki.ca_pem, server_ck), is_server=True)
    with pytest.raises(TLSError):
        server.receive(b"\x16\x03\x01\x00\x05hello" + bytes(100))


def test_bad_key_pem_is_a_tls_error(pki, client_ck):
    bad = dataclasses.replace(config(pki.ca_pem, client_ck), key_pem=b"not a key")
    with pytest.raises(TLSError):
        TLSConnection(bad, is_server=False)


def test_remote_cert_tls_client_requires_client_eku(pki, server_ck):
    no_eku = odd_leaf(pki, "client-3", eku=None)
    with pytest.raises(TLSError, match="TLS Web Client Authentication"):
        handshake(
            config(pki.ca_pem, no_eku), config(pki.ca_pem, server_ck, remote_cert_tls="client")
        )
    # Without remote-cert-tls the same certificate is fine.
    handshake(config(pki.ca_pem, no_eku), config(pki.ca_pem, server_ck))


# ---------------------------------------------------------------- tls-cipher, tls-ciphersuites,
# tls-groups / ecdh-curve reach the context; crl-verify's file is asked for per handshake


def side(pki: PKI, cn: str, server: bool, **policy) -> TLSConnection:
    cred = pki.server(cn) if server else pki.client(cn)
    cfg = TLSConfig(ca_pem=pki.ca_pem, cert_pem=cred.cert_pem, key_pem=cred.key_pem, **policy)
    return TLSConnection(cfg, is_server=server)


def connect(client: TLSConnection, server: TLSConnection) -> None:
    pump(client, server)
    assert client.handshake_complete and server.handshake_complete


def test_tls_cipher_restricts_tls12(pki) -> None:
    c = side(pki, "c", False, tls_version_max="1.2",
             tls_cipher="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    s = side(pki, "s", True)
    connect(c, s)
    assert "AES128-GCM" in (c.cipher_name or "")


def test_disjoint_tls_cipher_lists_fail_the_handshake(pki) -> None:
    c = side(pki, "c", False, tls_version_max="1.2", tls_cipher="ECDHE-ECDSA-AES128-GCM-SHA256")
    s = side(pki, "s", True, tls_cipher="ECDHE-ECDSA-CHACHA20-POLY1305")
    with pytest.raises(TLSError, match=r"no shared cipher|handshake failure"):
        connect(c, s)


def test_tls_ciphersuites_restrict_tls13(pki) -> None:
    c = side(pki, "c", False, tls_ciphersuites="TLS_CHACHA20_POLY1305_SHA256")
    s = side(pki, "s", True)
    connect(c, s)
    assert c.cipher_name == "TLS_CHACHA20_POLY1305_SHA256"
    c = side(pki, "c", False, tls_ciphersuites="TLS_AES_128_GCM_SHA256")
    s = side(pki, "s", True, tls_ciphersuites="TLS_CHACHA20_POLY1305_SHA256")
    with pytest.raises(TLSError):
        connect(c, s)


def test_disjoint_tls_groups_fail_the_handshake(pki) -> None:
    connect(side(pki, "c", False, tls_groups="X25519"), side(pki, "s", True,
                                                               tls_groups="X25519:P-256"))
    c = side(pki, "c", False, tls_groups="X25519")
    s = side(pki, "s", True, tls_groups="P-384")
    with pytest.raises(TLSError):
        connect(c, s)


def _tls_client(pki: PKI, tmp_path, extra: str) -> str:
    cred = pki.client("pc")
    return (f"client\nremote h\n<ca>\n{pki.ca_pem.decode()}</ca>\n"
            f"<cert>\n{cred.cert_pem.decode()}</cert>\n<key>\n{cred.key_pem.decode()}</key>\n"
            + extra)


def test_ecdh_curve_is_the_group_and_bad_names_are_one_config_line(pki, tmp_path) -> None:
    cfg = parse_text(_tls_client(pki, tmp_path, "ecdh-curve secp384r1\n"), "e.conf", tmp_path)
    assert tls_config(cfg).tls_groups == "secp384r1"
    for option, value in (("tls-cipher", "TLS-NOPE"), ("tls-ciphersuites", "NOPE"),
                          ("tls-groups", "nope"), ("ecdh-curve", "nope")):
        text = _tls_client(pki, tmp_path, f"{option} {value}\n")
        cfg = parse_text(text, "e.conf", tmp_path)
        with pytest.raises(ConfigError) as info:
            tls_config(cfg)
        line = text.count("\n")
        assert str(info.value).startswith(f"e.conf:{line}: {option}: "), str(info.value)


def test_crl_file_is_read_again_when_it_changes(pki, tmp_path) -> None:
    victim = pki.client("victim")
    path = tmp_path / "crl.pem"
    path.write_bytes(pki.crl_pem())
    crl = CrlFile(path, path.read_bytes())
    server_cfg = TLSConfig(ca_pem=pki.ca_pem, cert_pem=pki.server("s").cert_pem,
                           key_pem=pki.issued["s"].key_pem, crl_source=crl)
    client_cfg = TLSConfig(ca_pem=pki.ca_pem, cert_pem=victim.cert_pem, key_pem=victim.key_pem)
    connect(TLSConnection(client_cfg, False), TLSConnection(server_cfg, True))
    pki.revoke(victim)
    path.write_bytes(pki.crl_pem())
    os.utime(path, ns=(1, 1))  # a new stamp even within the clock's resolution
    with pytest.raises(TLSError, match="certificate revoked"):
        connect(TLSConnection(client_cfg, False), TLSConnection(server_cfg, True))
    path.write_text("garbage")  # a broken file keeps the last good CRL
    with pytest.raises(TLSError, match="certificate revoked"):
        connect(TLSConnection(client_cfg, False), TLSConnection(server_cfg, True))
