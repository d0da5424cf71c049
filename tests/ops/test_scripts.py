"""Script hooks run for real (small /bin/sh scripts): environment, arguments, exit codes,
script-security, via-file/via-env, the client-connect config file, deferral, timeouts.

The exact variable set is compared with a real openvpn's in test_openvpn_oracle.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from xdp_ovpn.config import parse_text
from xdp_ovpn.control.scripts import (
    ScriptError,
    ScriptPeer,
    ScriptRunner,
    cert_env,
    parse_command,
)
from xdp_ovpn.lab.openvpn import TunnelSpec
from xdp_ovpn.lab.pki import PKI


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI()


def hook(tmp_path: Path, body: str = "exit 0", name: str = "hook.sh") -> Path:
    """A script that records its argv and environment as JSON lines, then runs `body`."""
    out = tmp_path / "calls.jsonl"
    path = tmp_path / name
    path.write_text(f"""#!/bin/sh
{{ for a in "$@"; do printf '%s\\n' "$a"; done > {tmp_path}/args.$$; env > {tmp_path}/env.$$;
  /usr/bin/python3 -c 'import json,sys; print(json.dumps({{"args": open(sys.argv[1]).read().splitlines(), "env": dict(l.split("=",1) for l in open(sys.argv[2]).read().splitlines() if "=" in l)}}))' {tmp_path}/args.$$ {tmp_path}/env.$$ >> {out}; }}
{body}
""")  # noqa: E501
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def calls(tmp_path: Path) -> list[dict]:
    path = tmp_path / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def runner(pki: PKI, tmp_path: Path, *options: str, security: int = 2,
           timeout: float = 10) -> ScriptRunner:
    text = TunnelSpec(pki).server_config(extra=[f"script-security {security}", *options])
    cfg = parse_text(text, str(tmp_path / "server.conf"), tmp_path)
    return ScriptRunner(cfg, "tun0", timeout=timeout, tmp_dir=tmp_path)


def alice(pki: PKI, **kw) -> ScriptPeer:
    cred = pki.issued.get("alice") or pki.client("alice")
    base = dict(remote=("10.1.0.2", 50429), common_name="alice", chain=[cred.cert, pki.ca.cert],
                peer_info={"IV_VER": "2.6.14", "IV_PLAT": "linux", "X_OTHER": "no"},
                vpn_ipv4="10.8.0.2", netmask4="255.255.255.0", vpn_ipv6="fd00:8::1000",
                netbits6=64, connected_since=1795268940.0)
    base.update(kw)
    return ScriptPeer(**base)


def strip_shell(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in ("PWD", "SHLVL", "_", "OLDPWD")}


def test_client_connect_environment_arguments_and_config_file(pki, tmp_path):
    script = hook(tmp_path, 'echo \'push "route 192.0.2.0 255.255.255.0"\' > "$1"\n'
                            "echo 'iroute 192.168.50.0 255.255.255.0' >> \"$1\"")
    r = runner(pki, tmp_path, f"client-connect {script}")
    result = asyncio.run(r.client_connect(alice(pki)))
    assert result.accepted
    assert result.config.push_options([]) == ["route 192.0.2.0 255.255.255.0"]
    assert result.config.all_iroutes == ["192.168.50.0/24"]
    (call,) = calls(tmp_path)
    env = strip_shell(call["env"])
    assert call["args"] == [env["client_connect_config_file"]]
    assert not Path(call["args"][0]).exists()  # removed after the script
    assert env["script_type"] == "client-connect"
    assert "PATH" not in env  # only openvpn's variables, as openvpn's execve gives
    for key, value in {
        "common_name": "alice", "trusted_ip": "10.1.0.2", "trusted_port": "50429",
        "untrusted_ip": "10.1.0.2", "ifconfig_pool_remote_ip": "10.8.0.2",
        "ifconfig_pool_netmask": "255.255.255.0", "ifconfig_pool_remote_ip6": "fd00:8::1000",
        "ifconfig_pool_ip6_netbits": "64", "ifconfig_pool_local_ip6": "fd00:8::1",
        "ifconfig_local": "10.8.0.1", "ifconfig_netmask": "255.255.255.0",
        "time_unix": "1795268940", "IV_VER": "2.6.14", "X509_0_CN": "alice",
        "X509_1_CN": "xdp-ovpn test CA", "tls_id_0": "CN=alice", "dev": "tun0",
        "daemon": "0", "proto_1": "udp", "local_port_1": "1194", "script_context": "init",
    }.items():  # fmt: skip
        assert env[key] == value, key
    assert "X_OTHER" not in env  # only IV_/UV_ peer info is exported


def test_client_connect_failure_refuses_and_empty_file_means_no_config(pki, tmp_path):
    refuse = runner(pki, tmp_path, f"client-connect {hook(tmp_path, 'exit 1')}")
    assert not asyncio.run(refuse.client_connect(alice(pki))).accepted
    ok = runner(pki, tmp_path, f"client-connect {hook(tmp_path, 'exit 0', 'ok.sh')}")
    result = asyncio.run(ok.client_connect(alice(pki)))
    assert result.accepted and result.config is None


def test_auth_via_file_accepts_one_user_and_rejects_another(pki, tmp_path):
    script = hook(tmp_path, '[ "$(head -n1 "$1")" = good ] && [ "$(tail -n1 "$1")" = pw ] '
                            '|| { echo "Account locked" > "$auth_failed_reason_file"; exit 1; }')
    r = runner(pki, tmp_path, f"auth-user-pass-verify {script} via-file")
    good = asyncio.run(r.auth_user_pass_verify(alice(pki), "good", "pw"))
    bad = asyncio.run(r.auth_user_pass_verify(alice(pki), "evil", "pw"))
    assert good.accepted and not bad.accepted
    assert bad.reason == "Account locked"
    first, _ = calls(tmp_path)
    env = first["env"]
    assert env["script_type"] == "user-pass-verify"  # openvpn's spelling, not the option's
    assert env["username"] == "good" and "password" not in env
    assert first["args"][0].startswith(str(tmp_path / "openvpn_up_"))
    assert not Path(first["args"][0]).exists()  # deleted after the script returned
    assert "trusted_ip" not in env and env["untrusted_ip"] == "10.1.0.2"
    assert sorted(p.name for p in tmp_path.glob("openvpn_*")) == []


@pytest.mark.parametrize(("security", "sees_password"), [(2, False), (3, True)])
def test_auth_via_env_shows_the_password_only_at_level_3(pki, tmp_path, security, sees_password):
    r = runner(pki, tmp_path, f"auth-user-pass-verify {hook(tmp_path)} via-env",
               security=security)
    assert asyncio.run(r.auth_user_pass_verify(alice(pki), "good", "pw")).accepted
    (call,) = calls(tmp_path)
    assert call["args"] == []
    assert ("password" in call["env"]) is sees_password
    assert call["env"]["username"] == "good"


def test_auth_deferred_through_the_control_file(pki, tmp_path):
    # Exit 2 = deferred; a background job writes the verdict later.
    body = '( sleep 0.3; echo {v} > "$auth_control_file" ) >/dev/null 2>&1 &\nexit 2'
    for verdict, expected in (("1", True), ("0", False)):
        r = runner(pki, tmp_path, f"auth-user-pass-verify {hook(tmp_path, body.format(v=verdict), f'd{verdict}.sh')} via-env")  # noqa: E501
        assert asyncio.run(r.auth_user_pass_verify(alice(pki), "u", "p")).accepted is expected
    silent = runner(pki, tmp_path, f"auth-user-pass-verify {hook(tmp_path, 'exit 2', 's.sh')} "
                                   "via-env")
    result = asyncio.run(silent.auth_user_pass_verify(alice(pki), "u", "p", deferred_timeout=0.3))
    assert not result.accepted


def test_client_disconnect_sees_byte_counts_and_duration(pki, tmp_path):
    r = runner(pki, tmp_path, f"client-disconnect {hook(tmp_path, 'exit 7')}")
    asyncio.run(r.client_disconnect(alice(pki), 2215, 2310, now=1795268974.0))
    (call,) = calls(tmp_path)
    env = call["env"]
    assert call["args"] == []
    assert (env["bytes_received"], env["bytes_sent"], env["time_duration"]) == (
        "2215", "2310", "34")
    assert env["script_type"] == "client-disconnect" and env["common_name"] == "alice"


def test_learn_address_add_and_delete(pki, tmp_path):
    r = runner(pki, tmp_path, f"learn-address {hook(tmp_path)}")
    assert asyncio.run(r.learn_address("add", "10.8.0.2", alice(pki)))
    assert asyncio.run(r.learn_address("add", "192.168.50.0/24", alice(pki)))
    assert asyncio.run(r.learn_address("delete", "10.8.0.2"))
    add, iroute, delete = calls(tmp_path)
    assert add["args"] == ["add", "10.8.0.2", "alice"]
    assert iroute["args"] == ["add", "192.168.50.0/24", "alice"]
    assert delete["args"] == ["delete", "10.8.0.2"]
    assert strip_shell(delete["env"]) == {"script_type": "learn-address"}  # as openvpn
    refuse = runner(pki, tmp_path, f"learn-address {hook(tmp_path, 'exit 1', 'no.sh')}")
    assert not asyncio.run(refuse.learn_address("add", "10.8.0.2", alice(pki)))


def test_tls_verify_runs_per_depth_ca_first_and_can_refuse(pki, tmp_path):
    r = runner(pki, tmp_path, f"tls-verify {hook(tmp_path)}")
    assert asyncio.run(r.tls_verify(alice(pki)))
    ca_call, leaf_call = calls(tmp_path)
    assert ca_call["args"] == ["1", "CN=xdp-ovpn test CA"]
    assert leaf_call["args"] == ["0", "CN=alice"]
    assert "X509_0_CN" not in ca_call["env"] and "common_name" not in ca_call["env"]
    assert leaf_call["env"]["common_name"] == "alice"
    refuse = runner(pki, tmp_path, "tls-verify " + str(hook(
        tmp_path, '[ "$1" = 1 ] || [ "$X509_0_CN" = bob ]', "only-bob.sh")))
    assert not asyncio.run(refuse.tls_verify(alice(pki)))


def test_script_security_1_runs_nothing_and_refuses(pki, tmp_path, caplog):
    r = runner(pki, tmp_path, f"client-connect {hook(tmp_path)}", security=1)
    assert not asyncio.run(r.client_connect(alice(pki))).accepted
    assert calls(tmp_path) == []
    assert "--script-security 2" in caplog.text


def test_hung_script_is_killed_and_counts_as_failure(pki, tmp_path):
    r = runner(pki, tmp_path, f"client-connect {hook(tmp_path, 'sleep 30')}", timeout=0.5)
    assert not asyncio.run(r.client_connect(alice(pki))).accepted


def test_missing_script_fails_without_traceback(pki, tmp_path, caplog):
    r = runner(pki, tmp_path, f"client-connect {tmp_path}/absent.sh")
    assert not asyncio.run(r.client_connect(alice(pki))).accepted
    assert "cannot run" in caplog.text


def test_command_with_quoted_arguments(pki, tmp_path):
    script = hook(tmp_path)
    r = runner(pki, tmp_path, f"learn-address '{script} \"first arg\"'")
    asyncio.run(r.learn_address("delete", "10.8.0.2"))
    assert calls(tmp_path)[0]["args"] == ["first arg", "delete", "10.8.0.2"]
    with pytest.raises(ScriptError, match="empty"):
        parse_command("")


def test_cert_env_names_and_serial_forms(pki):
    cred = pki.issued.get("alice") or pki.client("alice")
    env = cert_env(0, cred.cert)
    serial = cred.cert.serial_number
    assert env["tls_serial_0"] == str(serial)
    assert env["tls_serial_hex_0"].replace(":", "") == f"{serial:x}".rjust(
        len(env["tls_serial_hex_0"].replace(":", "")), "0")
    assert env["tls_digest_sha256_0"] == ":".join(f"{b:02x}" for b in cred.fingerprint)
    assert len(env["tls_digest_0"].split(":")) == 20
    assert os.path.basename(env["X509_0_CN"]) == "alice"
