"""The wire modules against the real openvpn binary over loopback UDP.

Our packet codec, wrapping and reliability layer carry a TLS handshake (pyOpenSSL
over memory BIOs) with a stock `openvpn --tls-server`; and openvpn clients' first
packets unwrap with our code. Nothing here mocks the peer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from openvpn_vectors import needs_openvpn

from xdp_ovpn.lab.pki import PKI
from xdp_ovpn.proto.constants import Opcode
from xdp_ovpn.proto.packet import ControlPacket, decode_control, encode_control
from xdp_ovpn.proto.reliable import ReliableLayer
from xdp_ovpn.proto.statickey import (
    StaticKey,
    TLSCryptV2ServerKey,
    format_static_key,
    format_tls_crypt_v2_client_key,
    format_tls_crypt_v2_server_key,
)
from xdp_ovpn.proto.tls_auth import TLSAuth
from xdp_ovpn.proto.tls_crypt import TLSCrypt
from xdp_ovpn.proto.tls_crypt_v2 import (
    EarlyNegotiation,
    TLSCryptV2Client,
    TLSCryptV2Server,
    build_early_negotiation,
    generate_client_key,
    has_early_negotiation,
)
from xdp_ovpn.proto.wrapping import ControlWrapper, NoWrap

pytestmark = [pytest.mark.openvpn, needs_openvpn]
LOCALHOST = "127.0.0.1"
DEADLINE = 20.0


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


@contextmanager
def openvpn(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """Run openvpn for the duration of the block; always terminated, output kept for errors."""
    proc = subprocess.Popen(
        ["openvpn", "--dev", "null", "--verb", "4", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def pki_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[PKI, dict[str, Path]]:
    pki = PKI()
    return pki, pki.write(tmp_path_factory.mktemp("pki"), pki.server())


def _tls_client(pki: PKI) -> SSL.Connection:
    ctx = SSL.Context(SSL.TLS_METHOD)
    cred = pki.client()
    ctx.use_certificate(cred.cert)
    ctx.use_privatekey(cred.key)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    return conn


def _drain(tls: SSL.Connection) -> bytes:
    out = b""
    while True:
        try:
            out += tls.bio_read(65536)
        except SSL.WantReadError:
            return out


def handshake_through_openvpn(
    pki: PKI, port: int, wrapper: ControlWrapper, reset: Opcode = Opcode.HARD_RESET_CLIENT_V2
) -> tuple[str, ReliableLayer]:
    """Do the reset exchange and a whole TLS handshake with openvpn using our wire modules;
    return the server certificate's CN."""
    sid = os.urandom(8)
    rel = ReliableLayer(sid, wrap_overhead=wrapper.overhead)
    rel.queue(b"", reset)
    tls = _tls_client(pki)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(0.05)
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            now = time.monotonic()
            with_tls = rel.remote_session_id is not None
            if with_tls:
                try:
                    tls.do_handshake()
                    cert = tls.get_peer_certificate(as_cryptography=True)
                    assert cert is not None
                    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
                    return str(cn), rel
                except SSL.WantReadError:
                    pass
                if out := _drain(tls):
                    first_id = rel.next_send_id + rel.queued
                    rel.queue(out)
                    if isinstance(wrapper, TLSCryptV2Client):
                        rel.set_opcode_of_next(wrapper.control_opcode(first_id))
            for p in rel.packets_to_send(now):
                sock.sendto(wrapper.wrap(encode_control(p), now), (LOCALHOST, port))
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            packet = decode_control(wrapper.unwrap(data, time.monotonic()))
            if rel.remote_session_id is None:
                rel.remote_session_id = packet.session_id
            rel.receive(packet)
            for msg in rel.received():
                if msg.opcode == Opcode.CONTROL_V1:
                    tls.bio_write(msg.payload)
                elif msg.opcode == Opcode.HARD_RESET_SERVER_V2 and isinstance(
                    wrapper, TLSCryptV2Client
                ):
                    wrapper.note_server_reset(msg.payload)
        raise AssertionError("no TLS handshake with openvpn within the deadline")
    finally:
        sock.close()


def _server_args(paths: dict[str, Path], port: int) -> list[str]:
    return [
        "--tls-server",
        *("--ca", str(paths["ca"]), "--cert", str(paths["cert"]), "--key", str(paths["key"])),
        *("--dh", "none", "--proto", "udp", "--local", LOCALHOST, "--lport", str(port)),
    ]


WRAPS: dict[str, tuple[list[str], Callable[[StaticKey], ControlWrapper]]] = {
    "none": ([], lambda key: NoWrap()),
    "tls-auth-sha1-dir1": (["--tls-auth", "ta.key", "0"], lambda key: TLSAuth(key, 1, "SHA1")),
    "tls-auth-sha256-bidir": (
        ["--tls-auth", "ta.key", "--auth", "SHA256"],
        lambda key: TLSAuth(key, None, "SHA256"),
    ),
    "tls-auth-sha512-dir0": (
        ["--tls-auth", "ta.key", "1", "--auth", "SHA512"],
        lambda key: TLSAuth(key, 0, "SHA512"),
    ),
    "tls-crypt": (["--tls-crypt", "ta.key"], lambda key: TLSCrypt(key, is_server=False)),
}


@pytest.mark.parametrize("mode", sorted(WRAPS))
def test_tls_handshake_with_openvpn_server(
    mode: str, pki_files: tuple[PKI, dict[str, Path]], tmp_path: Path
) -> None:
    pki, paths = pki_files
    key = StaticKey.generate()
    (tmp_path / "ta.key").write_text(format_static_key(key))  # our key file, read by openvpn
    args, make_wrapper = WRAPS[mode]
    port = _free_udp_port()
    with openvpn([*_server_args(paths, port), *args], tmp_path) as proc:
        time.sleep(0.5)
        try:
            cn, rel = handshake_through_openvpn(pki, port, make_wrapper(key))
        except AssertionError:
            proc.terminate()
            pytest.fail(proc.communicate()[0][-3000:])
    assert cn == "server"
    assert rel.next_send_id > 2 and rel.next_recv_id > 2  # the handshake spanned packets


@pytest.mark.parametrize(
    "server_mode",
    [False, pytest.param(True, marks=pytest.mark.root)],
    ids=["p2p", "mode-server"],
)
@pytest.mark.parametrize("early_negotiation", [True, False], ids=["early-neg", "no-early-neg"])
def test_tls_crypt_v2_handshake_with_openvpn_server(
    server_mode: bool,
    early_negotiation: bool,
    pki_files: tuple[PKI, dict[str, Path]],
    tmp_path: Path,
) -> None:
    pki, paths = pki_files
    server_key = TLSCryptV2ServerKey.generate()
    (tmp_path / "v2.key").write_text(format_tls_crypt_v2_server_key(server_key))
    client_key = generate_client_key(server_key, b"interop")
    args = [*_server_args(paths, port := _free_udp_port()), "--tls-crypt-v2", "v2.key"]
    if server_mode:
        # --mode server wants a real tun: a uniquely named one, gone when openvpn exits,
        # left unconfigured so the host's addresses and routes are untouched.
        dev = f"xow{os.getpid() % 100000}"
        args += ["--mode", "server", "--dev", dev, "--dev-type", "tun", "--ifconfig-noexec"]
        args += ["--topology", "subnet", "--ifconfig", "10.99.0.1", "255.255.255.0"]
    wrapper = TLSCryptV2Client(client_key, early_negotiation=early_negotiation)
    with openvpn(args, tmp_path) as proc:
        time.sleep(0.5)
        try:
            cn, _ = handshake_through_openvpn(pki, port, wrapper, Opcode.HARD_RESET_CLIENT_V3)
        except AssertionError:
            proc.terminate()
            pytest.fail(proc.communicate()[0][-3000:])
    assert cn == "server"
    # openvpn in server mode answers early-negotiating clients statelessly and asks for WKc.
    assert wrapper.resend_wkc == (server_mode and early_negotiation)


def _client_args(paths: dict[str, Path], port: int) -> list[str]:
    return [
        "--tls-client",
        *("--ca", str(paths["ca"]), "--cert", str(paths["cert"]), "--key", str(paths["key"])),
        *("--proto", "udp", "--remote", LOCALHOST, str(port), "--nobind"),
    ]


def answer_openvpn_client(
    sock: socket.socket, reset: ControlPacket, wrapper: ControlWrapper, payload: bytes = b""
) -> bytes:
    """Reply to an openvpn client's reset as a server would; return the client's next
    datagram that is not an ACK_V1: the first CONTROL packet of the TLS handshake."""
    assert reset.opcode in {Opcode.HARD_RESET_CLIENT_V2, Opcode.HARD_RESET_CLIENT_V3}
    assert reset.packet_id == 0
    reply = ControlPacket(
        Opcode.HARD_RESET_SERVER_V2, 0, os.urandom(8), (0,), reset.session_id, 0, payload
    )
    sock.send(wrapper.wrap(encode_control(reply), time.monotonic()))
    while True:
        data = sock.recv(4096)
        if data[0] >> 3 != Opcode.ACK_V1:
            return data


@pytest.mark.parametrize(
    "args,make_wrapper",
    [
        (["--tls-auth", "ta.key", "1", "--auth", "SHA256"], lambda key: TLSAuth(key, 0, "SHA256")),
        (["--tls-crypt", "ta.key"], lambda key: TLSCrypt(key, is_server=True)),
    ],
    ids=["tls-auth", "tls-crypt"],
)
def test_openvpn_client_packets_unwrap_with_our_server_side(
    args: list[str],
    make_wrapper: Callable[[StaticKey], ControlWrapper],
    pki_files: tuple[PKI, dict[str, Path]],
    tmp_path: Path,
) -> None:
    _, paths = pki_files
    key = StaticKey.generate()
    (tmp_path / "ta.key").write_text(format_static_key(key))
    wrapper = make_wrapper(key)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        sock.settimeout(10)
        with openvpn([*_client_args(paths, sock.getsockname()[1]), *args], tmp_path):
            first, peer = sock.recvfrom(4096)
            sock.connect(peer)
            reset = decode_control(wrapper.unwrap(first, time.monotonic()))
            wire = answer_openvpn_client(sock, reset, wrapper)
    ctl = decode_control(wrapper.unwrap(wire, time.monotonic()))
    assert ctl.opcode == Opcode.CONTROL_V1 and ctl.packet_id == 1 and ctl.acks == (0,)
    assert ctl.payload[:1] == b"\x16"  # a TLS handshake record: the ClientHello


def test_openvpn_tls_crypt_v2_client_with_early_negotiation(
    pki_files: tuple[PKI, dict[str, Path]], tmp_path: Path
) -> None:
    _, paths = pki_files
    server_key = TLSCryptV2ServerKey.generate()
    client_key = generate_client_key(server_key, b"cn=alice")
    (tmp_path / "c.key").write_text(format_tls_crypt_v2_client_key(client_key))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOCALHOST, 0))
        sock.settimeout(10)
        args = [*_client_args(paths, sock.getsockname()[1]), "--tls-crypt-v2", "c.key"]
        with openvpn(args, tmp_path):
            first, peer = sock.recvfrom(4096)
            sock.connect(peer)
            assert has_early_negotiation(first)  # openvpn 2.6 announces it
            server = TLSCryptV2Server(server_key)
            wrapper, plain, metadata, mtype = server.unwrap_client_reset(first, time.monotonic())
            assert (mtype, metadata) == (0, b"cn=alice")
            # Answer asking for the WKc again, as openvpn's server does statelessly.
            resend = build_early_negotiation(EarlyNegotiation(resend_wkc=True))
            wire = answer_openvpn_client(sock, decode_control(plain), wrapper, resend)
    assert wire.endswith(client_key.wkc)
    # A server that kept no state gets the client's key back from this packet alone...
    _, plain2, metadata2, _ = TLSCryptV2Server(server_key).unwrap_client_reset(wire, 1.0)
    ctl = decode_control(plain2)
    assert ctl.opcode == Opcode.CONTROL_WKC_V1 and ctl.packet_id == 1 and metadata2 == metadata
    assert ctl.payload[:1] == b"\x16"
    # ...and one that did keep the session's wrapper unwraps it too, ignoring the WKc.
    assert wrapper.unwrap(wire, time.monotonic()) == plain2
