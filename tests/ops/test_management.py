"""The management interface, spoken to by real clients over real sockets.

Expected replies are openvpn 2.6.14's (observed from a lab server, see test_openvpn_oracle
for the side-by-side run); openvpn-monitor, the tool people point at openvpn servers, is
one of the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.mgmtclient import CRLF, Client
from xdp_ovpn.control.management import (
    GREETING,
    ManagementError,
    ManagementHooks,
    ManagementInterface,
    listen_args,
    read_password_file,
)
from xdp_ovpn.control.status import ClientSnapshot, StatusSnapshot, render, title


@dataclass
class FakeServer:
    """The server side the hooks call into: a client list and a record of kills."""

    clients: list[ClientSnapshot] = field(default_factory=list)
    killed: list[object] = field(default_factory=list)
    dco: bool = False

    def snapshot(self) -> StatusSnapshot:
        return StatusSnapshot(list(self.clients), now=1795268953, dco=self.dco)

    def kill_cn(self, cn: str) -> int:
        gone = [c for c in self.clients if c.common_name == cn]
        self.clients = [c for c in self.clients if c not in gone]
        self.killed.append(cn)
        return len(gone)

    def kill_addr(self, host: str, port: int) -> int:
        gone = [c for c in self.clients if c.real_address == (host, port)]
        self.clients = [c for c in self.clients if c not in gone]
        self.killed.append((host, port))
        return len(gone)

    def hooks(self) -> ManagementHooks:
        return ManagementHooks(self.snapshot, self.kill_cn, self.kill_addr, status_version=2)


def two_clients() -> FakeServer:
    return FakeServer([
        ClientSnapshot("alice", ("10.1.0.2", 50429), 0, 1795268940, vpn_ipv4="10.8.0.2",
                       vpn_ipv6="fd00:8::1000", bytes_received=2103, bytes_sent=2198,
                       username="alice", client_id=0, cipher="AES-256-GCM"),
        ClientSnapshot("bob", ("10.1.0.3", 40001), 1, 1795268945, vpn_ipv4="10.8.0.3",
                       iroutes=("192.168.50.0/24",), bytes_received=10, bytes_sent=20,
                       client_id=1, cipher="AES-256-GCM"),
    ])  # fmt: skip


class Running:
    """A ManagementInterface on an event loop in a thread, for blocking test clients."""

    def __init__(self, iface: ManagementInterface) -> None:
        self.iface = iface
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro_or_fn, *args):
        if asyncio.iscoroutinefunction(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn(*args), self.loop).result(5)
        done = asyncio.run_coroutine_threadsafe(_call(coro_or_fn, *args), self.loop)
        return done.result(5)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.iface.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _call(fn, *args):
    return fn(*args)


@contextlib.contextmanager
def serving(fake: FakeServer, address: str = "127.0.0.1", port: str = "0",
            password: str | None = None) -> Iterator[Running]:
    run = Running(ManagementInterface(fake.hooks(), password))
    try:
        run.call(run.iface.start, address, port)
        yield run
    finally:
        run.close()


@pytest.fixture
def fake() -> FakeServer:
    return two_clients()


@pytest.fixture
def client(fake) -> Iterator[Client]:
    with serving(fake) as run:
        c = Client(run.iface.address)
        assert c.greeting() == GREETING + CRLF
        c.run = run
        yield c
        c.close()


def test_version_and_help(client):
    assert client.ask("version", "END\r\n") == (
        f"OpenVPN Version: {title(False)}\r\nManagement Version: 5\r\nEND\r\n")
    help_text = client.ask("help", "END\r\n")
    assert help_text.startswith(f"Management Interface for {title(False)}\r\nCommands:\r\n")
    for line in ("load-stats             : Show global server load stats.",
                 "kill IP:port           : Kill the client instance connecting from IP:port.",
                 "status [n]             : Show current daemon status info using format #n."):
        assert line + CRLF in help_text  # openvpn's own help lines


@pytest.mark.parametrize("dco", [True, False])
def test_version_and_status_say_whether_the_data_channel_is_offloaded(client, fake, dco):
    fake.dco = dco
    assert ("[DCO]" in client.ask("version", "END\r\n")) == dco
    assert f"GLOBAL_STATS,dco_enabled,{int(dco)}\r\n" in client.ask("status 2", "END\r\n")


@pytest.mark.parametrize("version", [1, 2, 3])
def test_status_is_the_status_report_ending_with_end(client, fake, version):
    reply = client.ask(f"status {version}", "END\r\n")
    assert reply == "".join(line + CRLF for line in render(fake.snapshot(), version))


def test_bare_status_uses_the_configured_version_and_bad_version_is_an_error(client, fake):
    assert client.ask("status", "END\r\n").startswith("TITLE,")
    assert client.ask("status 9") == "ERROR: bad status format version number\r\n"


def test_load_stats_nclients_pid(client):
    assert client.ask("load-stats") == "SUCCESS: nclients=2,bytesin=2113,bytesout=2218\r\n"
    assert client.ask("nclients") == "SUCCESS: nclients=2\r\n"
    assert client.ask("pid").startswith("SUCCESS: pid=")


def test_state_history_and_realtime(client):
    run = client.run
    run.call(run.iface.set_state, "CONNECTING")
    run.call(run.iface.set_state, "CONNECTED", "SUCCESS", "10.8.0.1", "fd00:8::1")
    line = client.ask("state", "END\r\n").split(CRLF)[0]
    stamp, rest = line.split(",", 1)
    assert abs(int(stamp) - time.time()) < 60
    assert rest == "CONNECTED,SUCCESS,10.8.0.1,,,,,fd00:8::1"  # openvpn's server state line
    history = client.ask("state all", "END\r\n").split(CRLF)
    assert [h.split(",", 1)[1] for h in history[:2]] == [
        "CONNECTING,,,,,,", "CONNECTED,SUCCESS,10.8.0.1,,,,,fd00:8::1"]
    assert client.ask("state on") == "SUCCESS: real-time state notification set to ON\r\n"
    run.call(run.iface.set_state, "EXITING", "SIGTERM")
    assert client.read_until(CRLF).startswith(">STATE:")


def test_kill_by_common_name_and_address(client, fake):
    assert client.ask("kill nobody") == "ERROR: common name 'nobody' not found\r\n"
    assert client.ask("kill alice") == "SUCCESS: common name 'alice' found, 1 client(s) killed\r\n"
    assert client.ask("kill 1.2.3.4:5") == "ERROR: client at address 1.2.3.4:5 not found\r\n"
    assert client.ask("kill 10.1.0.3:40001") == (
        "SUCCESS: 1 client(s) at address 10.1.0.3:40001 killed\r\n")
    assert client.ask("kill 10.1.0.3:70000") == "ERROR: port number is out of range: 70000\r\n"
    assert client.ask("kill") == "ERROR: the 'kill' command requires 1 parameter\r\n"
    assert fake.killed == ["nobody", "alice", ("1.2.3.4", 5), ("10.1.0.3", 40001)]


def test_unknown_command_and_quit(client):
    assert client.ask("foo") == "ERROR: unknown command, enter 'help' for more options\r\n"
    client.sock.sendall(b"quit\n")
    assert client.sock.recv(100) == b""  # closed, no reply (as openvpn)


def test_bytecount_sends_per_client_notifications(client):
    assert client.ask("bytecount 1") == "SUCCESS: bytecount interval changed\r\n"
    lines = client.read_until(CRLF)
    while lines.count(CRLF) < 2:
        lines += client.read_until(CRLF)
    assert lines.split(CRLF)[:2] == [">BYTECOUNT_CLI:0,2103,2198", ">BYTECOUNT_CLI:1,10,20"]
    assert client.ask("bytecount 0") == "SUCCESS: bytecount interval changed\r\n"


def test_password_prompt_accepts_the_file_password_and_closes_after_three_bad(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored\n")
    with serving(two_clients(), password=read_password_file(pw)) as run:
        good = Client(run.iface.address)
        assert good.read_until("ENTER PASSWORD:") == "ENTER PASSWORD:"
        assert good.ask("s3cret", GREETING + CRLF) == (
            "SUCCESS: password is correct\r\n" + GREETING + CRLF)
        assert good.ask("nclients") == "SUCCESS: nclients=2\r\n"
        bad = Client(run.iface.address)
        bad.read_until("ENTER PASSWORD:")
        for _ in range(2):
            assert bad.ask("wrong", "ENTER PASSWORD:") == "ERROR: bad password\r\nENTER PASSWORD:"
        assert bad.ask("wrong") == "ERROR: bad password\r\n"
        assert bad.sock.recv(100) == b""


def test_unix_socket_is_created_and_removed(tmp_path):
    path = tmp_path / "mgmt.sock"
    with serving(two_clients(), str(path), "unix"):
        c = Client(str(path))
        assert c.greeting() == GREETING + CRLF
        assert c.ask("nclients") == "SUCCESS: nclients=2\r\n"
        c.close()
    assert not path.exists()


def test_bad_listen_arguments_are_one_line_errors():
    with pytest.raises(ManagementError, match="bad port 'x'"):
        listen_args("127.0.0.1", "x")

    async def busy() -> None:
        first = ManagementInterface(two_clients().hooks())
        await first.start("127.0.0.1", "0")
        try:
            second = ManagementInterface(two_clients().hooks())
            await second.start("127.0.0.1", str(first.address[1]))
        finally:
            await first.close()

    with pytest.raises(ManagementError, match=r"cannot listen on 127\.0\.0\.1"):
        asyncio.run(busy())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # its semver call
@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_openvpn_monitor_lists_the_connected_clients(tmp_path, transport):
    collector = pytest.importorskip("tests.support.opsmonitor").collector()
    path = str(tmp_path / "m.sock")
    where = (path, "unix") if transport == "unix" else ("127.0.0.1", "0")
    with serving(two_clients(), *where) as run:
        run.call(run.iface.set_state, "CONNECTED", "SUCCESS", "10.8.0.1")
        if transport == "unix":
            vpn = collector.collect("", socket=path)
        else:
            vpn = collector.collect(*run.iface.address[:2])
    assert vpn["management_connection_successful"]
    assert str(vpn["version"]) == "2.6.14"
    assert vpn["state"]["connected"] == "CONNECTED" and vpn["state"]["mode"] == "Server"
    assert vpn["stats"] == {"nclients": 2, "bytesin": 2113, "bytesout": 2218}
    sessions = vpn["sessions"]
    assert {s["username"] for s in sessions.values()} == {"alice", "bob"}
    assert {str(s["remote_ip"]) for s in sessions.values()} == {"10.1.0.2", "10.1.0.3"}


# ---------------------------------------------------------------- a client's interface


def client_mode() -> ManagementInterface:
    """A client's or p2p endpoint's interface: STATISTICS for status, its own link bytes."""
    def statistics() -> list[str]:
        return ["OpenVPN STATISTICS", "Updated,2026-12-02 01:00:00",
                "TCP/UDP read bytes,300", "END"]
    hooks = ManagementHooks(StatusSnapshot, totals=lambda: (300, 400), statistics=statistics)
    return ManagementInterface(hooks)


def test_client_status_is_its_statistics_whatever_the_version():
    iface = client_mode()
    for words in (["status"], ["status", "2"], ["status", "3"]):
        assert iface.command(words) == ["OpenVPN STATISTICS", "Updated,2026-12-02 01:00:00",
                                        "TCP/UDP read bytes,300", "END"]


@pytest.mark.parametrize("words", [["kill", "alice"], ["client-kill", "1"], ["nclients"]])
def test_server_commands_on_a_client_answer_openvpns_error(words):
    assert client_mode().command(words) == [
        f"ERROR: The '{words[0]}' command is not supported by the current daemon mode"]


def test_client_server_command_without_its_parameter_says_so_first():
    assert client_mode().command(["kill"]) == ["ERROR: the 'kill' command requires 1 parameter"]


def test_client_load_stats_and_bytecount_are_its_own_link_bytes():
    iface = client_mode()
    assert iface.command(["load-stats"]) == ["SUCCESS: nclients=0,bytesin=300,bytesout=400"]
    assert iface._bytecounts() == [">BYTECOUNT:300,400"]


def test_client_state_lines_carry_the_remote_and_local_sockets():
    iface = client_mode()
    iface.set_state("WAIT", "", "", "", "10.1.0.1,1194")
    iface.set_state("CONNECTED", "SUCCESS", "10.8.0.2", "fd00:8::1000", "10.1.0.1,1194",
                    "10.1.0.2,40000")
    wait, connected, end = iface.command(["state", "all"])
    assert wait.split(",")[1:] == ["WAIT", "", "", "10.1.0.1", "1194", "", ""]
    assert connected.split(",")[1:] == ["CONNECTED", "SUCCESS", "10.8.0.2", "10.1.0.1", "1194",
                                        "10.1.0.2", "40000", "fd00:8::1000"]
    assert end == "END"
