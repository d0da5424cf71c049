"""The config parser: openvpn syntax, defaults and expansions, and one-line refusals."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xdp_ovpn.config import (
    SUPPORTED_OPTIONS,
    ConfigError,
    Location,
    Remote,
    Role,
    Wrapping,
    ignored_notes,
    load,
    parse_args,
    parse_text,
    split_line,
)
from xdp_ovpn.lab.pki import PKI

STATIC_KEY = (
    "-----BEGIN OpenVPN Static key V1-----\n"
    + "00" * 256
    + "\n-----END OpenVPN Static key V1-----\n"
)


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


@pytest.fixture
def conf_dir(tmp_path: Path, pki: PKI) -> Path:
    pki.write(tmp_path, pki.server("server"))
    pki.write(tmp_path, pki.client("client"))
    (tmp_path / "ta.key").write_text(STATIC_KEY)
    return tmp_path


def write(conf_dir: Path, body: str, name: str = "test.conf") -> Path:
    path = conf_dir / name
    path.write_text(textwrap.dedent(body))
    return path


SERVER = """\
    dev tun
    proto udp
    ca ca.crt
    cert server.crt
    key server.key
    dh none
    topology subnet
    server 10.8.0.0 255.255.255.0
    """

CLIENT = """\
    client
    dev tun
    remote vpn.example 1194
    ca ca.crt
    cert client.crt
    key client.key
    """

P2P = """\
    dev tun
    tls-server
    ifconfig 10.9.0.1 10.9.0.2
    ca ca.crt
    cert server.crt
    key server.key
    """


def error_of(conf_dir: Path, body: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(write(conf_dir, body))
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- tokenizer


def test_split_line_handles_quotes_escapes_and_comments():
    here = Location("x.conf", 1)
    assert split_line('push "route 10.0.0.0 255.0.0.0"  # why', here) == [
        "push",
        "route 10.0.0.0 255.0.0.0",
    ]
    assert split_line("a 'b \\ c' d\\ e", here) == ["a", "b \\ c", "d e"]
    assert split_line("  ; comment", here) == []
    assert split_line('x ""', here) == ["x", ""]
    assert split_line("key a#b", here) == ["key", "a#b"]


def test_unclosed_quote_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r'^x.conf:3: no closing quotation \("\)$'):
        split_line('push "route', Location("x.conf", 3))


# ---------------------------------------------------------------- roles and expansion


def test_server_helper_expands_like_openvpn(conf_dir):
    cfg = load(write(conf_dir, SERVER + "server-ipv6 fd00:8::/64\nkeepalive 10 60\n"))
    assert cfg.role is Role.SERVER
    assert (cfg.mode, cfg.tls_server, cfg.topology) == ("server", True, "subnet")
    assert cfg.ifconfig == ("10.8.0.1", "255.255.255.0")
    assert cfg.ifconfig_pool == (
        ipaddress.IPv4Address("10.8.0.2"),
        ipaddress.IPv4Address("10.8.0.254"),
    )
    assert cfg.ifconfig_ipv6 == (
        ipaddress.IPv6Interface("fd00:8::1/64"),
        ipaddress.IPv6Address("fd00:8::2"),
    )
    assert cfg.ifconfig_ipv6_pool_base == ipaddress.IPv6Address("fd00:8::1000")
    # helper.c order: server-ipv6, then server, then keepalive; config pushes first.
    assert cfg.push == [
        "tun-ipv6",
        "route-gateway 10.8.0.1",
        "topology subnet",
        "ping 10",
        "ping-restart 60",
    ]
    assert (cfg.ping, cfg.ping_restart) == (10, 120)  # the server waits twice as long


def test_server_without_topology_is_refused_as_openvpn_default_net30(conf_dir):
    got = error_of(conf_dir, SERVER.replace("topology subnet\n", ""))
    assert got == (
        f"{conf_dir}/test.conf:7: topology: openvpn 2.6's default topology is net30, which a "
        "server here does not support; add 'topology subnet' (clients take the pushed topology)"
    )


def test_server_nopool_and_small_ipv6_pool(conf_dir):
    body = SERVER.replace("255.255.255.0", "255.255.255.0 nopool") + "server-ipv6 fd00::/112\n"
    cfg = load(write(conf_dir, body))
    assert cfg.ifconfig_pool is None
    assert cfg.ifconfig_ipv6_pool_base == ipaddress.IPv6Address("fd00::2")


def test_client_expands_to_pull_and_tls_client(conf_dir):
    cfg = load(write(conf_dir, CLIENT + "keepalive 10 60\nremote other 1195 udp6\nport 1300\n"))
    assert cfg.role is Role.CLIENT
    assert cfg.pull and cfg.tls_client and not cfg.tls_server
    assert cfg.remotes == [Remote("vpn.example", 1194, "udp"), Remote("other", 1195, "udp6")]
    assert (cfg.ping, cfg.ping_restart, cfg.push) == (10, 60, [])


def test_remote_port_defaults_to_final_rport(conf_dir):
    cfg = load(write(conf_dir, CLIENT + "remote b\nrport 2000\nproto udp6\n"))
    assert cfg.remotes[1] == Remote("b", 2000, "udp6")


def test_xdp_interface_adds_up_from_file_and_command_line_and_xdp_mode_is_kept(conf_dir):
    path = write(conf_dir, CLIENT + "xdp-interface eth0\nxdp-mode generic\n")
    cfg = load(path, ["--xdp-interface", "eth1", "--xdp-mode", "native"])
    assert (cfg.xdp_interfaces, cfg.xdp_mode) == (["eth0", "eth1"], "native")
    default = load(write(conf_dir, CLIENT))
    assert (default.xdp_interfaces, default.xdp_mode) == ([], None)


def test_p2p_tls_roles(conf_dir):
    cfg = load(write(conf_dir, P2P))
    assert cfg.role is Role.P2P and cfg.tls_server
    assert cfg.tun_ipv4() == (
        ipaddress.IPv4Interface("10.9.0.1/32"),
        ipaddress.IPv4Address("10.9.0.2"),
    )


def test_openvpn_defaults(conf_dir):
    cfg = load(write(conf_dir, CLIENT))
    assert (cfg.lport, cfg.rport, cfg.proto, cfg.tun_mtu) == (1194, 1194, "udp", 1500)
    assert cfg.data_ciphers == ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")
    assert (cfg.reneg_sec, cfg.hand_window, cfg.tran_window) == (3600, 60, 3600)
    assert (cfg.replay_window, cfg.replay_time, cfg.auth, cfg.verb) == (64, 15, "SHA1", 1)
    assert cfg.wrapping is Wrapping.NONE
    assert not cfg.dev_name_fixed


def test_inline_blocks_and_key_direction(conf_dir, pki):
    body = "\n".join(
        [
            "client",
            "remote 192.0.2.1",
            "dev tun3",
            "<ca>",
            pki.ca_pem.decode().strip(),
            "</ca>",
            "cert client.crt",
            "key client.key",
            "<tls-auth>",
            STATIC_KEY.strip(),
            "</tls-auth>",
            "key-direction 1",
            "<peer-fingerprint>",
            "# pinned",
            "AB:" * 31 + "CD",
            "</peer-fingerprint>",
            "<auth-user-pass>",
            "alice",
            "secret",
            "</auth-user-pass>",
        ]
    )
    cfg = load(write(conf_dir, body))
    assert cfg.ca == pki.ca_pem
    assert cfg.tls_wrap.mode is Wrapping.TLS_AUTH
    assert cfg.tls_wrap.direction == 1 and cfg.tls_wrap.path is None
    assert cfg.tls_wrap.key == STATIC_KEY.encode()
    assert cfg.peer_fingerprints == [bytes([0xAB] * 31 + [0xCD])]
    assert cfg.auth_user_pass == ("alice", "secret")
    assert cfg.dev_name_fixed


def test_file_paths_are_relative_to_config_dir_and_cd(conf_dir, pki):
    sub = conf_dir / "keys"
    sub.mkdir()
    (sub / "tc.key").write_text(STATIC_KEY)
    body = CLIENT + "cd keys\ntls-crypt tc.key\nwritepid run.pid\n"
    cfg = load(write(conf_dir, body))
    assert cfg.tls_wrap.path == sub / "tc.key"
    assert cfg.writepid == sub / "run.pid"


def test_tls_auth_file_with_direction_and_tls_crypt_v2(conf_dir):
    cfg = load(write(conf_dir, SERVER + "tls-auth ta.key 0\nauth SHA256\n"))
    assert cfg.tls_wrap.direction == 0 and cfg.tls_wrap.path == conf_dir / "ta.key"
    assert cfg.auth == "SHA256"
    cfg = load(write(conf_dir, SERVER + "tls-crypt-v2 ta.key allow-noncookie\n"))
    assert cfg.wrapping is Wrapping.TLS_CRYPT_V2 and not cfg.tls_wrap.force_cookie


def test_stored_server_feature_options(conf_dir):
    body = SERVER + textwrap.dedent(
        """\
        client-config-dir ccd
        ifconfig-pool-persist ipp.txt 30
        duplicate-cn
        max-clients 7
        client-to-client
        verify-client-cert optional
        username-as-common-name
        script-security 2
        auth-user-pass-verify "/bin/check arg" via-file
        client-connect /bin/cc
        client-disconnect /bin/cd
        learn-address /bin/la
        tls-verify /bin/tv
        management 127.0.0.1 7505
        status st.log 5
        push "route 10.1.0.0 255.255.0.0"
        route 10.1.0.0 255.255.0.0
        route-ipv6 fd01::/64
        allow-compression no
        reneg-sec 600
        replay-window 128 30
        data-ciphers AES-128-GCM:?NOPE-CIPHER:chacha20-poly1305
        crl-verify crl.pem
        remote-cert-tls client
        verify-x509-name client name-prefix
        tls-version-min 1.2 or-highest
        """
    )
    cfg = load(write(conf_dir, body))
    assert cfg.client_config_dir == conf_dir / "ccd"
    assert (cfg.ifconfig_pool_persist_seconds, cfg.max_clients) == (30, 7)
    assert cfg.duplicate_cn and cfg.client_to_client and cfg.username_as_common_name
    assert cfg.verify_client_cert == "optional" and cfg.script_security == 2
    assert cfg.auth_user_pass_verify == ("/bin/check arg", "via-file")
    assert (cfg.client_connect, cfg.learn_address, cfg.tls_verify) == (
        "/bin/cc",
        "/bin/la",
        "/bin/tv",
    )
    assert cfg.management.port == "7505" and cfg.status_seconds == 5
    assert cfg.push[0] == "route 10.1.0.0 255.255.0.0"
    assert cfg.routes[0].network == ipaddress.IPv4Network("10.1.0.0/16")
    assert cfg.routes_ipv6[0].network == ipaddress.IPv6Network("fd01::/64")
    assert (cfg.reneg_sec, cfg.replay_window, cfg.replay_time) == (600, 128, 30)
    assert cfg.data_ciphers == ("AES-128-GCM", "CHACHA20-POLY1305")
    assert cfg.crl.startswith(b"-----BEGIN X509 CRL") and cfg.crl_path == conf_dir / "crl.pem"
    assert cfg.verify_x509_name == ("client", "name-prefix")


def test_harmless_options_are_ignored(conf_dir):
    body = CLIENT + "resolv-retry infinite\nmute-replay-warnings\nmute 20\nauth-nocache\nnobind\n"
    cfg = load(write(conf_dir, body))
    assert {"resolv-retry", "mute-replay-warnings", "mute", "auth-nocache"} <= set(cfg.ignored)
    assert not cfg.bind


def test_ignore_unknown_option_and_dashes(conf_dir):
    cfg = load(write(conf_dir, CLIENT + "ignore-unknown-option frob\nfrob 1\n--verb 4\n"))
    assert cfg.verb == 4 and "frob" in cfg.ignored


def test_non_aead_cipher_is_ignored_with_pull_like_openvpn_26(conf_dir):
    cfg = load(write(conf_dir, CLIENT + "cipher AES-256-CBC\n"))
    assert cfg.cipher is None
    assert cfg.warnings == [
        "cipher AES-256-CBC is ignored: negotiation uses data-ciphers "
        "(AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305)"
    ]


def test_command_line_options(conf_dir):
    conf = write(conf_dir, CLIENT)
    cfg = parse_args(["--config", str(conf), "--verb", "5", "--remote", "h2", "1200"])
    assert cfg.verb == 5 and cfg.remotes[-1] == Remote("h2", 1200, "udp")
    cfg = load(conf, ["--proto", "udp6"])
    assert cfg.remotes[0].proto == "udp6"


def test_parse_text_without_files(pki):
    text = "tls-client\n<ca>\n" + pki.ca_pem.decode() + "</ca>\nverify-x509-name server name\n"
    text += "<cert>\n" + pki.client("c").cert_pem.decode() + "</cert>\n"
    text += "<key>\n" + pki.issued["c"].key_pem.decode() + "</key>\n"
    cfg = parse_text(text, "inline.conf")
    assert cfg.role is Role.P2P and cfg.tls_client


# ---------------------------------------------------------------- refusals: exact one-line messages

AEAD = "the DCO-style data path does AES-128/192/256-GCM and CHACHA20-POLY1305 only"
COMPRESS = (
    "compression framing (stubs included) is not supported by the DCO-style data path; "
    "remove it"
)
COMP_LZO = (
    "compression is not supported by the DCO-style data path (openvpn 2.6 disables DCO for it "
    "too); remove it"
)
TAP = "layer 2 (tap) is not supported: the DCO-style data path is tun only"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("dev tap", f"dev tap: {TAP}"),
        ("dev tap0", f"dev tap0: {TAP}"),
        ("dev-type tap", f"dev-type tap: {TAP}"),
        ("proto tcp", "proto tcp: TCP is not supported yet (udp, udp4 or udp6)"),
        ("proto tcp-server", "proto tcp-server: TCP is not supported yet (udp, udp4 or udp6)"),
        ("proto tcp6-client", "proto tcp6-client: TCP is not supported yet (udp, udp4 or udp6)"),
        ("remote h 1194 tcp", "remote tcp: TCP is not supported yet (udp, udp4 or udp6)"),
        ("proto sctp", "proto: unknown protocol 'sctp' (udp, udp4 or udp6)"),
        (
            "comp-lzo",
            f"comp-lzo: {COMP_LZO}",
        ),
        (
            "comp-lzo no",
            f"comp-lzo: {COMP_LZO}",
        ),
        ("compress", f"compress: {COMPRESS}"),
        ("compress stub", f"compress stub: {COMPRESS}"),
        ("compress stub-v2", f"compress stub-v2: {COMPRESS}"),
        ("compress lz4-v2", f"compress lz4-v2: {COMPRESS}"),
        ("compress lzo", f"compress lzo: {COMPRESS}"),
        (
            "allow-compression yes",
            "allow-compression yes: compression is not supported by the DCO-style data path; "
            "use 'allow-compression no'",
        ),
        (
            "fragment 1300",
            "fragment: not supported by the DCO-style data path; lower tun-mtu",
        ),
        (
            "data-ciphers AES-256-GCM:AES-256-CBC",
            f"data-ciphers: AES-256-CBC is not an AEAD cipher; {AEAD}",
        ),
        (
            "data-ciphers-fallback BF-CBC",
            f"data-ciphers-fallback: BF-CBC is not an AEAD cipher; {AEAD}",
        ),
        ("secret static.key", "secret: static-key mode is not supported; use TLS (ca/cert/key)"),
        ("topology star", "topology: must be net30 or p2p or subnet, not 'star'"),
        ("frobnicate 3", "frobnicate: unknown or unsupported option"),
        ("daemon", "daemon: xdp-ovpn runs in the foreground; use a service manager"),
        ("shaper 1000", "shaper: not supported by the DCO-style data path; use tc"),
        ("server-bridge", f"server-bridge: {TAP}"),
        ("socks-proxy h 1080", "socks-proxy: needs TCP, which is not supported yet"),
        ("http-proxy h 8080", "http-proxy: needs TCP, which is not supported yet"),
        ("pkcs12 c.p12", "pkcs12: not supported; give ca, cert and key in PEM"),
        (
            "<connection>\nremote h\n</connection>",
            "connection: <connection> blocks are not supported; use several 'remote' lines",
        ),
        ("dev null", "dev null: a null device carries no traffic; use tun"),
        ("<verb>\n3\n</verb>", "verb: cannot be given as an inline block"),
        ("port 70000", "port: 70000 is out of range (1..65535)"),
        ("verb loud", "verb: 'loud' is not a number"),
        ("persist-tun now", "persist-tun: takes 0 arguments, got 1"),
        ("keepalive 10 15", "keepalive: the timeout (15) must be at least twice the interval (10)"),
        ("redirect-gateway def2", "redirect-gateway: unknown flag 'def2'"),
        (
            "reneg-sec 600 300",
            "reneg-sec: the second argument (a random lower bound) is not supported yet; "
            "give one value",
        ),
        ("mssfix 100", "mssfix: must be 0 (no clamping) or at least 576, not 100"),
        ("mssfix 1400 auto", "mssfix: the second argument must be mtu or fixed, not 'auto'"),
        ("reneg-pkts -1", "reneg-pkts: -1 is out of range (0..2147483647)"),
        (
            "auth-user-pass",
            "auth-user-pass: needs a file or an inline block (xdp-ovpn does not prompt)",
        ),
        ("ca missing.crt", "ca: cannot read {dir}/missing.crt: No such file or directory"),
    ],
)
def test_refused_option_names_file_line_and_reason(conf_dir, line, message):
    got = error_of(conf_dir, CLIENT + line + "\n")
    assert got == f"{conf_dir}/test.conf:7: " + message.format(dir=conf_dir)


@pytest.mark.parametrize(
    ("lines", "mssfix", "mode"),
    [("", None, ""), ("mssfix 1400 mtu\nmssfix\n", None, ""), ("mssfix 0\n", 0, ""),
     ("mssfix 1400\n", 1400, ""), ("mssfix 1300 fixed\n", 1300, "fixed")],
)
def test_mssfix_forms(conf_dir, lines, mssfix, mode):
    cfg = load(write(conf_dir, CLIENT + lines))
    assert (cfg.mssfix, cfg.mssfix_mode) == (mssfix, mode)


def test_non_aead_cipher_in_p2p_is_refused(conf_dir):
    got = error_of(conf_dir, P2P + "cipher AES-256-CBC\n")
    assert got == (
        f"{conf_dir}/test.conf:7: cipher: AES-256-CBC is not an AEAD cipher "
        f"(p2p uses it as the fallback); {AEAD}"
    )


@pytest.mark.parametrize("topology", ["net30", "p2p"])
def test_server_topology_other_than_subnet_is_refused(conf_dir, topology):
    got = error_of(conf_dir, SERVER.replace("topology subnet", f"topology {topology}"))
    assert got == (
        f"{conf_dir}/test.conf:7: topology {topology}: "
        "a server needs 'topology subnet' for the DCO-style data path"
    )


def test_missing_role_and_credentials(conf_dir):
    got = error_of(conf_dir, "dev tun\n")
    assert got == (
        f"{conf_dir}/test.conf: no TLS role: use 'client', 'server', or tls-client/tls-server "
        "for p2p (static-key mode is not supported)"
    )
    got = error_of(conf_dir, CLIENT.replace("cert client.crt\n", ""))
    assert got == f"{conf_dir}/test.conf:1: cert: missing"
    got = error_of(conf_dir, "client\nca ca.crt\ncert client.crt\nkey client.key\n")
    assert got == f"{conf_dir}/test.conf:1: remote: a client needs at least one 'remote'"


def test_conflicting_wrappings_and_unclosed_inline(conf_dir):
    got = error_of(conf_dir, CLIENT + "tls-auth ta.key 1\ntls-crypt ta.key\n")
    assert got == f"{conf_dir}/test.conf:8: tls-crypt: cannot be combined with tls-auth"
    got = error_of(conf_dir, CLIENT + "<ca>\nxyz\n")
    assert got == f"{conf_dir}/test.conf:7: ca: inline block <ca> has no </ca>"


def test_keepalive_conflicts_with_ping(conf_dir):
    got = error_of(conf_dir, CLIENT + "ping 5\nkeepalive 10 60\n")
    assert (
        got == f"{conf_dir}/test.conf:8: keepalive: conflicts with ping, ping-exit and ping-restart"
    )


def test_server_subnet_too_small(conf_dir):
    got = error_of(conf_dir, SERVER.replace("255.255.255.0", "255.255.255.252"))
    assert got == (
        f"{conf_dir}/test.conf:8: server: with dev tun the subnet must be /29 "
        "(255.255.255.248) or larger"
    )


def test_missing_config_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.conf")
    assert (
        str(info.value)
        == f"{tmp_path}/nope.conf: cannot read config file: No such file or directory"
    )


# ---------------------------------------------------------------- fuzzing: errors, never tracebacks

_VALUES = ["tap", "tcp", "udp6", "10.8.0.0", "255.255.255.0", "fd00::/64", "1194", "-1", "x\0y"]
_WORDS = st.sampled_from([*sorted(SUPPORTED_OPTIONS), *_VALUES])
_FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(lines=st.lists(st.lists(_WORDS | st.text(max_size=8), min_size=1, max_size=4), max_size=8))
def test_any_option_soup_parses_or_fails_with_one_line(tmp_path, lines):
    text = "\n".join(" ".join(words) for words in lines)
    try:
        parse_text(text, "fuzz.conf", tmp_path)
    except ConfigError as exc:
        assert all("\n" not in str(e) for e in getattr(exc, "errors", [exc]))


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_any_text_parses_or_fails_with_one_line(tmp_path, text):
    try:
        parse_text(text, "fuzz.conf", tmp_path)
    except ConfigError as exc:
        assert all("\n" not in str(e) for e in getattr(exc, "errors", [exc]))


def test_status_version_is_parsed_and_bounded(conf_dir):
    cfg = load(write(conf_dir, SERVER + "status s.log 5\nstatus-version 3\n"))
    assert cfg.status_version == 3 and cfg.status_seconds == 5
    assert "status-version" in error_of(conf_dir, SERVER + "status-version 4\n")


def test_xdp_control_limit_is_xdp_ovpns_own_directive(conf_dir):
    from xdp_ovpn.loader.maps import DEFAULT_CONTROL_LIMITS, ControlLimits

    assert load(write(conf_dir, CLIENT)).xdp_control_limit is DEFAULT_CONTROL_LIMITS
    cfg = load(write(conf_dir, CLIENT + "xdp-control-limit 8 32 500 1000\n"))
    assert cfg.xdp_control_limit == ControlLimits(8, 32, 500, 1000)
    assert load(write(conf_dir, CLIENT + "xdp-control-limit off\n")).xdp_control_limit is None
    cfg = load(write(conf_dir, CLIENT), ["--xdp-control-limit", "1", "2", "3", "4"])
    assert cfg.xdp_control_limit == ControlLimits(1, 2, 3, 4)
    for bad, message in [("8 32", "SOURCE_RATE SOURCE_BURST"), ("8 0 1 1", "source burst"),
                         ("x 1 1 1", "'x' is not a number")]:
        with pytest.raises(ConfigError, match=message) as err:
            load(write(conf_dir, CLIENT + f"xdp-control-limit {bad}\n"))
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------- options of another role


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("client-connect /bin/true", "client-connect: needs mode server (as in openvpn)"),
        ("duplicate-cn", "duplicate-cn: needs mode server (as in openvpn)"),
        ("push \"route 10.0.0.0 255.0.0.0\"", "push: needs mode server (as in openvpn)"),
        ("verify-client-cert none", "verify-client-cert: needs mode server (as in openvpn)"),
        ("user nobody", "user: not supported yet on a client; remove it"),
        ("management 127.0.0.1 7505", "management: not supported yet on a client; remove it"),
        ("tls-verify /bin/true", "tls-verify: not supported yet on a client; remove it"),
    ],
)
def test_server_options_on_a_client_are_refused(conf_dir, line, message):
    assert error_of(conf_dir, CLIENT + line + "\n") == f"{conf_dir}/test.conf:7: {message}"


def test_status_version_on_a_client_is_a_logged_ignore(conf_dir):
    cfg = load(write(conf_dir, CLIENT + "status s.log\nstatus-version 2\n"))
    assert cfg.status == conf_dir / "s.log" and "status-version" in cfg.ignored


def test_persist_tun_on_a_server_is_a_logged_ignore(conf_dir):
    cfg = load(write(conf_dir, SERVER + "persist-tun\n"))
    assert "persist-tun" in cfg.ignored
    assert "persist-tun: ignored (a server's restart makes the TUN again" in "\n".join(
        ignored_notes(cfg)
    )
