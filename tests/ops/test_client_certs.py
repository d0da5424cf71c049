"""verify-client-cert none|optional and the client's chain handed to tls-verify (sans-I/O)."""

from __future__ import annotations

import dataclasses

from cryptography import x509

from tests.proto.test_tls import config, handshake
from xdp_ovpn.config import parse_text
from xdp_ovpn.control.scripts import common_name_of
from xdp_ovpn.control.sessionconfig import tls_config
from xdp_ovpn.lab.openvpn import TunnelSpec
from xdp_ovpn.lab.pki import PKI


def test_verify_client_cert_maps_onto_tls_config():
    spec = TunnelSpec(PKI())
    wants = {"none": (False, False), "optional": (False, True), "require": (True, True)}
    for value, (require, request) in wants.items():
        cfg = parse_text(spec.server_config(extra=[f"verify-client-cert {value}"]))
        tls = tls_config(cfg)
        assert (tls.require_peer_cert, tls.request_peer_cert) == (require, request), value


def test_none_does_not_ask_for_a_certificate():
    pki = PKI()
    server_cfg = dataclasses.replace(config(pki.ca_pem, pki.server("server")),
                                     require_peer_cert=False, request_peer_cert=False)
    _, server = handshake(config(pki.ca_pem, pki.client("alice")), server_cfg)
    assert server.handshake_complete
    assert server.peer_certificate is None and server.peer_chain_der() == ()


def test_optional_verifies_a_certificate_when_given_and_hands_over_the_chain():
    pki = PKI()
    server_cfg = dataclasses.replace(config(pki.ca_pem, pki.server("server")),
                                     require_peer_cert=False)
    _, server = handshake(config(pki.ca_pem, pki.client("alice")), server_cfg)
    assert server.peer_certificate is not None
    chain = [x509.load_der_x509_certificate(der) for der in server.peer_chain_der()]
    assert [common_name_of(c) for c in chain] == ["alice", "xdp-ovpn test CA"]  # depth 0 first
