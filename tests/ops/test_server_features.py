"""Server features with real openvpn 2.6 clients against `xdp-ovpn run` (socket data path).

One server serves most checks: client-config-dir (ifconfig-push, iroute, iroute-ipv6,
disable), client-to-client through the kernel, ifconfig-pool-persist, every script hook
(auth-user-pass-verify via-file with a reason file, client-connect writing a push,
client-disconnect, learn-address, tls-verify), status file version 3 read by
openvpn-monitor's parser, management over a unix socket read by openvpn-monitor itself,
the metrics endpoint, and `user nobody`. A second, small server covers
verify-client-cert none, username-as-common-name, auth-user-pass-verify via-env,
max-clients, a status file in version 1 and management over TCP.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import pytest

from tests.support.interop import ping, star
from tests.support.mgmtclient import CRLF, Client
from xdp_ovpn.lab import Lab
from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, TunnelSpec
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.openvpn]

METRICS = "127.0.0.1:9176"
HOOK = """#!/bin/sh
# Records every call; accepts a user whose password is "<user>-pw". The .env file appears
# whole (written aside, then renamed): the test polls for it while the script runs.
out={hooks}/$script_type.$$
for a in "$@"; do printf '%s\\n' "$a"; done > "$out.args"
env > "$out.partial" && mv "$out.partial" "$out.env"
case "$script_type" in
user-pass-verify)
    if [ -n "$1" ]; then u=$(sed -n 1p "$1"); p=$(sed -n 2p "$1"); else u=$username; p=$password; fi
    [ "$p" = "$u-pw" ] && exit 0
    echo "bad password for $u" > "$auth_failed_reason_file"; exit 1 ;;
client-connect)
    [ "$common_name" = bob ] && echo 'push "route 192.0.2.0 255.255.255.0"' > "$1" ;;
esac
exit 0
"""


def shared_dir() -> Path:
    """A directory `nobody` can read (CCD, hooks) after the server drops root."""
    path = Path(tempfile.mkdtemp(prefix="xo-ops-"))
    path.chmod(0o755)
    return path


def hook_script(base: Path) -> tuple[Path, Path]:
    hooks = base / "hooks"
    hooks.mkdir()
    hooks.chmod(0o777)  # the scripts run as nobody and write their records here
    script = base / "hook.sh"
    script.write_text(HOOK.format(hooks=hooks))
    script.chmod(0o755)
    return script, hooks


def calls(hooks: Path, script_type: str) -> list[dict]:
    """Recorded calls of one hook: {"args": [...], "env": {...}}."""
    out = []
    for env_file in sorted(hooks.glob(f"{script_type}.*.env"), key=lambda p: p.stat().st_mtime):
        env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
        args = env_file.with_suffix(".args").read_text().splitlines()
        out.append({"args": args, "env": env})
    return out


def login(user: str, password: str | None = None) -> list[str]:
    return ["<auth-user-pass>", user, password or f"{user}-pw", "</auth-user-pass>"]


def xdp_server(ns, spec, extra, base: Path, *, metrics: str | None = None) -> OpenVPNServer:
    # Scripts run in the config's directory: `nobody` must be able to enter it.
    workdir = base / "server"
    workdir.mkdir(mode=0o755)
    server = OpenVPNServer(ns, spec, program="xdp-ovpn", extra=extra, workdir=workdir)
    base = server.command()
    more = ["--data-path", "socket"] + (["--metrics", metrics] if metrics else [])
    server.command = lambda: [*base, *more]  # type: ignore[method-assign]
    return server


def refused(ns, server, remote: str, cn: str, creds: list[str]) -> OpenVPNClient:
    """A client expected to be refused: ready once it logs AUTH_FAILED."""
    client = OpenVPNClient(ns, server, remote=remote, cn=cn, dev="tun1", extra=creds)
    client.ready = r"AUTH_FAILED"
    return client


def status_v3(collector, text: str) -> dict:
    """openvpn-monitor's own parser over a status report (version 3) text."""
    return collector.parse_status(text.replace("\n", "\r\n"), collector.version_info("2.6.14"),
                                  None)


def parse_status(collector, text: str) -> dict[str, dict]:
    """Any status version, by name: versions 2 and 3 through openvpn-monitor's parser (2 is
    3 with commas for tabs), version 1 by its two sections."""
    text = text.replace("\r\n", "\n")
    if text.startswith("TITLE,"):
        text = text.replace(",", "\t")
    if text.startswith("TITLE\t"):
        return _by_name(status_v3(collector, text))
    assert text.startswith("OpenVPN CLIENT LIST\nUpdated,"), text
    head, _, routes = text.partition("\nROUTING TABLE\n")
    assert routes.startswith("Virtual Address,Common Name,Real Address,Last Ref\n"), text
    assert routes.endswith("\nGLOBAL STATS\nMax bcast/mcast queue length,0\nEND\n"), text
    out = {}
    for line in head.splitlines()[3:]:
        cn, real, rx, tx, since = line.split(",")
        host, port = real.rsplit(":", 1)
        out[cn] = {"remote_ip": host, "port": int(port), "bytes_recv": int(rx),
                   "bytes_sent": int(tx), "connected_since": since}
    return out


class World:
    pass


@pytest.fixture(scope="module")
def world():
    collector = pytest.importorskip("tests.support.opsmonitor").collector()
    with Lab() as lab:
        hub, spokes = star(lab, 3)
        hub.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])
        (a_ns, a_addr), (b_ns, b_addr), (x_ns, x_addr) = spokes
        # A host on Alice's LAN, reached through her iroutes (no dummy module here: lo).
        a_ns.run(["ip", "addr", "add", "192.168.77.1/32", "dev", "lo"])
        a_ns.run(["ip", "addr", "add", "fd77::1/128", "dev", "lo"])
        base = shared_dir()
        ccd = base / "ccd"
        ccd.mkdir()
        (ccd / "alice").write_text("ifconfig-push 10.8.0.50 255.255.255.0\n"
                                   "iroute 192.168.77.0 255.255.255.0\niroute-ipv6 fd77::/64\n"
                                   'push "route 198.51.100.0 255.255.255.0"\n')
        (ccd / "mallory").write_text("disable\n")
        for f in ccd.iterdir():
            f.chmod(0o644)
        pool = base / "ipp.txt"
        pool.write_text("bob,10.8.0.77,\n")
        script, hooks = hook_script(base)
        status = base / "status.log"
        sock = base / "mgmt.sock"
        extra = [
            f"client-config-dir {ccd}", "client-to-client",
            'push "route 192.168.77.0 255.255.255.0"', 'push "route-ipv6 fd77::/64"',
            f"ifconfig-pool-persist {pool} 1", "script-security 2",
            f"auth-user-pass-verify {script} via-file", f"client-connect {script}",
            f"client-disconnect {script}", f"learn-address {script}", f"tls-verify {script}",
            f"status {status} 1", "status-version 3", f"management {sock} unix",
            "user nobody", "group nogroup",
        ]
        spec = TunnelSpec(PKI(), wrapping="tls-crypt")
        server = xdp_server(hub, spec, extra, base, metrics=METRICS)
        alice = OpenVPNClient(a_ns, server, remote=a_addr, cn="alice", extra=login("alice"))
        bob = OpenVPNClient(b_ns, server, remote=b_addr, cn="bob", extra=login("bob"))
        w = World()
        w.__dict__.update(lab=lab, hub=hub, a_ns=a_ns, b_ns=b_ns, x_ns=x_ns, x_addr=x_addr,
                          server=server, alice=alice, bob=bob, hooks=hooks, status=status,
                          sock=str(sock), pool=pool, collector=collector)
        code = None
        try:
            server.start()
            alice.start(wait=False)
            bob.start(wait=False)
            alice.wait_for_ready()
            bob.wait_for_ready()
            yield w
        finally:
            for ep in (bob, alice):
                ep.stop()
            code = server.stop()
            print(server.log_tail(60))  # shown when a test failed
        assert code == 0  # a clean exit as nobody: TUN, worker and sockets closed


def test_ccd_ifconfig_push_push_and_persisted_pool_address(world) -> None:
    assert str(world.alice.tun_ipv4()) == "10.8.0.50/24"  # CCD ifconfig-push
    assert str(world.bob.tun_ipv4()) == "10.8.0.77/24"  # ifconfig-pool-persist
    assert "198.51.100.0/24" in world.a_ns.run(["ip", "route"]).stdout  # CCD push
    assert "198.51.100.0/24" not in world.b_ns.run(["ip", "route"]).stdout


def test_iroute_is_a_kernel_route_reachable_from_server_and_other_clients(world) -> None:
    routes = world.hub.run(["ip", "route", "show", "192.168.77.0/24"]).stdout
    assert "via 10.8.0.50 dev tun0" in routes
    routes6 = world.hub.run(["ip", "-6", "route", "show", "fd77::/64"]).stdout
    assert f"via {world.alice.tun_ipv6().ip} dev tun0" in routes6
    ping(world.hub, "192.168.77.1", count=2)
    ping(world.hub, "fd77::1", count=2)
    ping(world.b_ns, "192.168.77.1", count=2)


def test_client_to_client_through_the_kernel(world) -> None:
    ping(world.b_ns, "10.8.0.50", count=2)
    ping(world.a_ns, "10.8.0.77", count=2)


def test_client_connect_pushes_a_per_client_route(world) -> None:
    assert "192.0.2.0/24" in world.b_ns.run(["ip", "route"]).stdout
    assert "192.0.2.0/24" not in world.a_ns.run(["ip", "route"]).stdout
    connects = calls(world.hooks, "client-connect")
    bob = next(c for c in connects if c["env"]["common_name"] == "bob")
    assert bob["env"]["ifconfig_pool_remote_ip"] == "10.8.0.77"
    assert bob["env"]["username"] == "bob"


def test_scripts_see_openvpns_environment(world) -> None:
    verifies = calls(world.hooks, "tls-verify")
    depths = {(c["args"][0], c["env"].get("X509_0_CN")) for c in verifies}
    assert ("0", "alice") in depths and ("1", None) in depths  # CA first, then the client
    auths = calls(world.hooks, "user-pass-verify")
    assert {c["env"]["username"] for c in auths} >= {"alice", "bob"}
    assert all("password" not in c["env"] for c in auths)  # via-file, script-security 2
    learned = {tuple(c["args"]) for c in calls(world.hooks, "learn-address")}
    assert ("add", "192.168.77.0/24", "alice") in learned
    assert ("add", "10.8.0.77", "bob") in learned


def test_refused_clients_get_auth_failed(world) -> None:
    wrong = refused(world.x_ns, world.server, world.x_addr, "dave", login("dave", "nope"))
    with wrong:
        assert "AUTH_FAILED,bad password for dave" in wrong.log()
    disabled = refused(world.x_ns, world.server, world.x_addr, "mallory", login("mallory"))
    with disabled:
        pass
    log = world.server.log()
    assert "client is disabled" in log
    assert not any(c["env"]["common_name"] in ("dave", "mallory")
                   for c in calls(world.hooks, "client-connect"))


def _by_name(sessions: dict) -> dict:
    """openvpn-monitor's sessions by name (its `username` is the CN when openvpn says UNDEF,
    and here every username equals the CN)."""
    return {s["username"]: s for s in sessions.values()}


def test_status_file_parses(world) -> None:
    ping(world.b_ns, "10.8.0.1", count=1)
    world.lab.wait_for(lambda: "bob" in world.status.read_text(), timeout=5)
    sessions = parse_status(world.collector, world.status.read_text())
    assert set(sessions) == {"alice", "bob"}
    assert str(sessions["bob"]["remote_ip"]) == "10.1.1.2"
    assert sessions["bob"]["bytes_recv"] > 0 and sessions["bob"]["bytes_sent"] > 0
    assert os.stat(world.status).st_uid == 0  # rewritten in place by the unprivileged server


def test_management_versions_and_openvpn_monitor(world) -> None:
    c = Client(world.sock)
    try:
        c.greeting()
        v1 = c.ask("status 1", "END" + CRLF)
        v2 = c.ask("status 2", "END" + CRLF)
        v3 = c.ask("status 3", "END" + CRLF)
        load = c.ask("load-stats")
        state = c.ask("state", "END" + CRLF)
    finally:
        c.close()
    assert re.search(r"^ROUTING_TABLE,192\.168\.77\.0/24,alice,", v2, re.M)
    by_version = [parse_status(world.collector, v) for v in (v1, v2, v3)]
    for sessions in by_version:
        assert set(sessions) == {"alice", "bob"}
        assert str(sessions["bob"]["remote_ip"]) == "10.1.1.2"
        assert sessions["alice"]["bytes_recv"] > 0 and sessions["alice"]["bytes_sent"] > 0
    for sessions in by_version[1:]:
        # openvpn-monitor shows the IPv6 tunnel address when there is one.
        assert sessions["alice"]["local_ip"] == world.alice.tun_ipv6().ip
    assert re.match(r"SUCCESS: nclients=2,bytesin=[1-9]\d*,bytesout=[1-9]\d*", load)
    assert ",CONNECTED,SUCCESS,10.8.0.1," in state
    vpn = world.collector.collect("", socket=world.sock)
    assert set(_by_name(vpn["sessions"])) == {"alice", "bob"}
    assert vpn["stats"]["nclients"] == 2
    assert vpn["state"]["connected"] == "CONNECTED" and vpn["state"]["mode"] == "Server"


def test_metrics_endpoint(world) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    fetch = ("import urllib.request,sys;"
             f"sys.stdout.write(urllib.request.urlopen('http://{METRICS}/metrics').read().decode())")
    text = world.hub.run([sys.executable, "-c", fetch]).stdout
    families = {f.name: f for f in text_string_to_metric_families(text)}
    received = {s.labels["common_name"]: s.value
                for s in families["xdp_ovpn_peer_received_bytes"].samples}
    assert set(received) == {"alice", "bob"} and min(received.values()) > 0
    assert families["xdp_ovpn_clients"].samples[0].value == 2
    assert families["xdp_ovpn_worker_up"].samples[0].value == 1
    assert families["xdp_ovpn_handshakes"].samples[0].value >= 2


def test_server_runs_as_nobody_and_still_saves_the_pool(world) -> None:
    status = Path(f"/proc/{world.server.proc.pid}/status").read_text()
    uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
    assert uid == str(__import__("pwd").getpwnam("nobody").pw_uid)
    # Every second, rewritten in place (nobody cannot write the directory).
    world.lab.wait_for(lambda: re.search(r"^bob,10\.8\.0\.77,fd00:8::\w+$",
                                         world.pool.read_text(), re.M), timeout=5)
    # Alice's IPv4 is her ifconfig-push, no pool lease; her IPv6 came from the pool.
    assert re.search(r"^alice,,fd00:8::\w+$", world.pool.read_text(), re.M)


def test_kill_runs_client_disconnect_with_byte_counts_and_drops_the_iroute(world) -> None:
    c = Client(world.sock)
    try:
        c.greeting()
        before = parse_status(world.collector, c.ask("status 3", "END" + CRLF))
        cid = before["alice"]["client_id"]
        assert c.ask(f"client-kill {cid} HALT") == "SUCCESS: client-kill command succeeded" + CRLF
        assert c.ask("kill bob").startswith("SUCCESS: common name 'bob' found, 1 client(s)")
    finally:
        c.close()
    world.alice.wait_for_log(r"server-pushed-halt")
    world.lab.wait_for(lambda: len(calls(world.hooks, "client-disconnect")) >= 2, timeout=10)
    gone = {c["env"]["common_name"]: c["env"] for c in calls(world.hooks, "client-disconnect")}
    for cn in ("alice", "bob"):
        assert int(gone[cn]["bytes_received"]) >= before[cn]["bytes_recv"] > 0
        assert int(gone[cn]["bytes_sent"]) >= before[cn]["bytes_sent"] > 0
    world.lab.wait_for(lambda: not world.hub.run(
        ["ip", "route", "show", "192.168.77.0/24"]).stdout.strip(), timeout=5)
    world.lab.wait_for(lambda: ["delete", "192.168.77.0/24"] in [
        c["args"] for c in calls(world.hooks, "learn-address")], timeout=5)


def test_no_client_cert_username_as_common_name_via_env_and_max_clients(lab) -> None:
    hub, spokes = star(lab, 2)
    base = shared_dir()
    script, hooks = hook_script(base)
    status = base / "status.log"
    extra = ["verify-client-cert none", "username-as-common-name", "script-security 3",
             f"auth-user-pass-verify {script} via-env", "max-clients 1",
             f"status {status} 1", "management 127.0.0.1 7505"]
    spec = TunnelSpec(PKI())
    server = xdp_server(hub, spec, extra, base)
    (z_ns, z_addr), (y_ns, y_addr) = spokes
    zoe = OpenVPNClient(z_ns, server, remote=z_addr, cn="client", extra=login("zoe"))
    extra_client = OpenVPNClient(y_ns, server, remote=y_addr, cn="client", extra=login("yan"))
    with server, zoe:
        ping(z_ns, server.tunnel_ipv4, count=1)
        env = calls(hooks, "user-pass-verify")[0]["env"]
        assert env["password"] == "zoe-pw" and "X509_0_CN" not in env
        lab.wait_for(lambda: "zoe," in status.read_text(), timeout=5)
        sessions = parse_status(None, status.read_text())  # version 1 (the default)
        assert list(sessions) == ["zoe"] and sessions["zoe"]["bytes_recv"] > 0
        since = server.log_size()
        extra_client.start(wait=False)
        try:
            server.wait_for_log("would exceed maximum number of clients", since=since)
        finally:
            extra_client.stop()
        # openvpn-monitor over TCP, from inside the server's namespace.
        monitor = ("import sys; sys.path.insert(0, sys.argv[1]);"
                   "from tests.support.opsmonitor import collector;"
                   "vpn = collector().collect('127.0.0.1', 7505);"
                   "print(sorted(s['username'] for s in vpn['sessions'].values()))")
        out = hub.run([sys.executable, "-c", monitor, str(Path(__file__).parents[2])]).stdout
        assert out.strip() == "['zoe']"


def test_same_name_again_replaces_the_older_session_without_duplicate_cn(world) -> None:
    world.lab.wait_for(lambda: "bob" in parse_status(world.collector, world.status.read_text()),
                       timeout=20)  # bob is back after his `kill` (RESTART)
    since = world.server.log_size()
    twin = OpenVPNClient(world.x_ns, world.server, remote=world.x_addr, cn="bob", dev="tun1",
                         extra=login("bob"))
    with twin:
        world.server.wait_for_log("previous active sessions by this client to be dropped",
                                  since=since)
        world.lab.wait_for(lambda: parse_status(world.collector, world.status.read_text())
                           .get("bob", {}).get("remote_ip") == "10.1.2.2", timeout=5)
        sessions = parse_status(world.collector, world.status.read_text())
        assert list(sessions) == ["bob"]  # one bob, the new one (alice halted)


@pytest.mark.parametrize(("args", "extra", "message"), [
    (["--metrics", "nope"], [], "xdp-ovpn: --metrics: expected ADDR:PORT, got 'nope'"),
    ([], ["user no-such-user-xo"], "xdp-ovpn: user: no such user 'no-such-user-xo'"),
    ([], ["management 127.0.0.1 99999"],
     "xdp-ovpn: management: bad port '99999' (a number, or 'unix')"),
])
def test_bad_operator_settings_are_one_line_errors(lab, args, extra, message) -> None:
    ns = lab.add_namespace("s")
    server = xdp_server(ns, TunnelSpec(PKI()), extra, shared_dir())
    server.config_path.write_text(server.config_text())
    out = ns.run([*server.command(), *args], check=False)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [message]
    assert not [n for n in ns.run(["ip", "-br", "link"]).stdout.split() if n.startswith("tun")]
