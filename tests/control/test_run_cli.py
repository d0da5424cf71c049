"""`xdp-ovpn run` refuses what it cannot do with one line on stderr and exit status 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xdp_ovpn.dataplane.factory import xdp_unavailable
from xdp_ovpn.lab.pki import PKI

TAP = "layer 2 (tap) is not supported: the DCO-style data path is tun only"
TCP = "TCP is not supported yet (udp, udp4 or udp6)"
AEAD = "the DCO-style data path does AES-128/192/256-GCM and CHACHA20-POLY1305 only"
COMPRESS = (
    "compression framing (stubs included) is not supported by the DCO-style data path; "
    "remove it"
)

# Every option the DCO-style data path rejects, with the message the user sees.
REJECTED = [
    ("dev tap", f"dev tap: {TAP}"),
    ("dev-type tap", f"dev-type tap: {TAP}"),
    ("server-bridge", f"server-bridge: {TAP}"),
    ("dev null", "dev null: a null device carries no traffic; use tun"),
    ("proto tcp", f"proto tcp: {TCP}"),
    ("proto tcp-client", f"proto tcp-client: {TCP}"),
    ("remote 10.1.0.1 1194 tcp", f"remote tcp: {TCP}"),
    ("socks-proxy h 1080", "socks-proxy: needs TCP, which is not supported yet"),
    ("http-proxy h 8080", "http-proxy: needs TCP, which is not supported yet"),
    ("comp-lzo", "comp-lzo: compression is not supported by the DCO-style data path (openvpn "
                 "2.6 disables DCO for it too); remove it"),
    ("compress lz4-v2", f"compress lz4-v2: {COMPRESS}"),
    ("compress stub-v2", f"compress stub-v2: {COMPRESS}"),
    ("allow-compression yes", "allow-compression yes: compression is not supported by the "
                              "DCO-style data path; use 'allow-compression no'"),
    ("fragment 1300", "fragment: not supported by the DCO-style data path; lower tun-mtu"),
    ("data-ciphers AES-256-CBC", f"data-ciphers: AES-256-CBC is not an AEAD cipher; {AEAD}"),
    ("data-ciphers-fallback BF-CBC", f"data-ciphers-fallback: BF-CBC is not an AEAD cipher; "
                                     f"{AEAD}"),
    ("secret static.key", "secret: static-key mode is not supported; use TLS (ca/cert/key)"),
    ("shaper 1000", "shaper: not supported by the DCO-style data path; use tc"),
    ("daemon", "daemon: xdp-ovpn runs in the foreground; use a service manager"),
    ("pkcs12 c.p12", "pkcs12: not supported; give ca, cert and key in PEM"),
    ("<connection>\nremote h\n</connection>",
     "connection: <connection> blocks are not supported; use several 'remote' lines"),
    ("frobnicate 3", "frobnicate: unknown or unsupported option"),
    ("xdp-mode skb", "xdp-mode: must be one of auto, native, generic, not 'skb'"),
]


@pytest.fixture(scope="module")
def client_lines(tmp_path_factory) -> list[str]:
    pki = PKI()
    cred = pki.client("client")
    return [
        "client", "nobind", "remote 10.1.0.1 1194",
        f"<ca>\n{pki.ca_pem.decode()}</ca>",
        f"<cert>\n{cred.cert_pem.decode()}</cert>",
        f"<key>\n{cred.key_pem.decode()}</key>",
    ]


def _run(path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "xdp_ovpn.cli", "run", "--config", str(path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(("line", "message"), REJECTED, ids=[r[0].split()[0] for r in REJECTED])
def test_rejected_option_is_one_line_on_stderr(tmp_path, client_lines, line, message) -> None:
    config = tmp_path / "c.conf"
    config.write_text("\n".join([line, *client_lines]) + "\n")
    assert _one_line_error(_run(config)) == f"xdp-ovpn: {config}:1: {message}"


def test_server_topology_net30_is_rejected(tmp_path) -> None:
    config = tmp_path / "s.conf"
    config.write_text("topology net30\nserver 10.8.0.0 255.255.255.0\n")
    assert _one_line_error(_run(config)) == (
        f"xdp-ovpn: {config}:1: topology net30: a server needs 'topology subnet' for the "
        "DCO-style data path"
    )


def test_missing_config_file(tmp_path) -> None:
    line = _one_line_error(_run(tmp_path / "nope.conf"))
    assert line.startswith("xdp-ovpn: ") and "cannot read config file" in line


@pytest.mark.skipif(xdp_unavailable() is None, reason="the XDP data path is available here")
def test_xdp_data_path_when_unavailable_is_one_line(tmp_path, client_lines) -> None:
    config = tmp_path / "c.conf"
    config.write_text("\n".join(client_lines) + "\n")
    line = _one_line_error(_run(config, "--data-path", "xdp"))
    assert line.startswith("xdp-ovpn: --data-path xdp: ")


@pytest.mark.parametrize("options", [("--xdp-mode", "native"), ("--xdp-interface", "eth0")])
def test_xdp_options_with_the_socket_data_path_are_refused(tmp_path, client_lines,
                                                           options) -> None:
    config = tmp_path / "c.conf"
    config.write_text("\n".join(client_lines) + "\n")
    line = _one_line_error(_run(config, "--data-path", "socket", *options))
    assert line == "xdp-ovpn: xdp-interface and xdp-mode need XDP, not --data-path socket"


def test_every_error_of_a_file_is_reported_in_one_run(tmp_path, client_lines) -> None:
    config = tmp_path / "c.conf"
    config.write_text("\n".join(["proto tcp", "verb loud", *client_lines, "frobnicate 3"]) + "\n")
    proc = _run(config)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"xdp-ovpn: {config}:1: proto tcp: {TCP}",
        f"xdp-ovpn: {config}:2: verb: 'loud' is not a number",
        f"xdp-ovpn: {config}:{len(client_lines) + 3 + _inline_extra(client_lines)}: "
        "frobnicate: unknown or unsupported option",
    ]


def _inline_extra(lines: list[str]) -> int:
    """Lines an inline <tag> block adds beyond its first."""
    return sum(line.count("\n") for line in lines)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xdp_ovpn.cli", *args],
                          capture_output=True, text=True, timeout=30)


def test_check_prints_effective_settings_and_starts_nothing(tmp_path, client_lines) -> None:
    config = tmp_path / "c.conf"
    config.write_text("\n".join([*client_lines, "mute 10", "tls-groups X25519"]) + "\n")
    for proc in (_run(config, "--check"), _cli("check-config", str(config)),
                 _cli("check-config", str(config), "--verb", "4")):
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.splitlines()
        assert "role = client" in out and "tls_groups = X25519" in out
        assert any(line.startswith("note: ") and "mute: ignored" in line for line in out)
        assert out[-1] == f"{config}: OK"
    assert "verb = 4" in _cli("check-config", str(config), "--verb", "4").stdout.splitlines()
    bad = tmp_path / "bad.conf"
    bad.write_text("\n".join([*client_lines, "tls-groups nope"]) + "\n")
    proc = _cli("check-config", str(bad))
    assert proc.returncode == 1 and proc.stderr.startswith(f"xdp-ovpn: {bad}:")
    assert "tls-groups: OpenSSL does not accept 'nope'" in proc.stderr


def test_positional_config_is_openvpn_style_run(tmp_path) -> None:
    config = tmp_path / "s.conf"
    config.write_text("frobnicate\n")
    expected = f"xdp-ovpn: {config}:1: frobnicate: unknown or unsupported option"
    assert _one_line_error(_cli(str(config))) == expected
    assert _one_line_error(_cli("--config", str(config))) == expected


