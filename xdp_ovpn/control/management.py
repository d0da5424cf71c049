"""The management interface (`management IP PORT [pw-file]`, `management PATH unix`).

openvpn's text protocol as its management clients expect it (manage.c): a `>INFO:` greeting,
one command a line, replies `SUCCESS: ...` / `ERROR: ...` or lines closed by `END`, real-time
notifications starting with `>`, every line ending in CRLF, each reply sent in one write
(openvpn-monitor stops reading `load-stats` at the first chunk). The server side of the
commands (who is connected, killing a client) comes through `ManagementHooks`; a client or
p2p endpoint gives `statistics` instead, and the server's commands answer as openvpn's do
without mode server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xdp_ovpn.config import ConfigError, Location, split_line
from xdp_ovpn.control.log import get_logger
from xdp_ovpn.control.status import StatusError, StatusSnapshot, render, title

MANAGEMENT_VERSION = 5
GREETING = (
    f">INFO:OpenVPN Management Interface Version {MANAGEMENT_VERSION} -- type 'help' for more info"
)
UNKNOWN = "ERROR: unknown command, enter 'help' for more options"
PASSWORD_PROMPT = "ENTER PASSWORD:"
_PASSWORD_TRIES = 3  # MANAGEMENT_N_PASSWORD_RETRIES
_MAX_LINE = 4096

_HELP = (
    "bytecount n            : Show bytes in/out, update every n secs (0=off).",
    "client-kill CID [M]    : Kill client instance CID with message M (def=RESTART)",
    "exit|quit              : Close management session.",
    "help                   : Print this message.",
    "kill cn                : Kill the client instance(s) having common name cn.",
    "kill IP:port           : Kill the client instance connecting from IP:port.",
    "load-stats             : Show global server load stats.",
    "nclients               : Show the number of connected clients.",
    "pid                    : Show process ID of the current OpenVPN process.",
    "signal s               : Send signal s to daemon,",
    "                         s = SIGHUP|SIGTERM|SIGUSR1|SIGUSR2.",
    "state [on|off] [N|all] : Like log, but show state history.",
    "status [n]             : Show current daemon status info using format #n.",
    "version [n]            : Set client's version to n or show current version of daemon.",
)


class ManagementError(Exception):
    """The interface cannot listen (bad address, socket in use): one line."""


@dataclass
class ManagementHooks:
    """What the management interface asks of the server."""

    snapshot: Callable[[], StatusSnapshot]
    kill_by_cn: Callable[[str], int] = lambda cn: 0  # returns how many were killed
    kill_by_address: Callable[[str, int], int] = lambda host, port: 0
    kill_by_cid: Callable[[int, str], bool] = lambda cid, message: False
    signal: Callable[[str], bool] | None = None  # "SIGTERM" ... -> accepted?
    # Global link byte totals since start (departed clients included); None: sum the
    # connected clients.
    totals: Callable[[], tuple[int, int]] | None = None
    status_version: int = 1  # what a bare `status` prints (the `status-version` option)
    # A client or p2p endpoint: its "OpenVPN STATISTICS" report (what its `status` prints);
    # `totals` are then its own link bytes (`bytecount`, `load-stats`).
    statistics: Callable[[], list[str]] | None = None


# What openvpn answers only with mode server (manage.c: man_command_unsupported).
_SERVER_COMMANDS = ("kill", "client-kill", "nclients")


@dataclass(frozen=True)
class StateEntry:
    """One step of the daemon's state history (`state`, `>STATE:`)."""

    timestamp: int
    name: str  # CONNECTING, ASSIGN_IP, CONNECTED, EXITING, ...
    description: str = ""
    local_ip: str = ""
    local_ip6: str = ""
    remote: str = ""  # a client's: "address,port" of the server, of its own socket
    local: str = ""

    def line(self) -> str:
        # An unknown socket is two empty columns (address, port), as on a server.
        tail = f",{self.local_ip6}" if self.local_ip6 else ""
        return (f"{self.timestamp},{self.name},{self.description},{self.local_ip},"
                f"{self.remote or ','},{self.local or ','}{tail}")


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    authenticated: bool
    state_realtime: bool = False
    bytecount_task: asyncio.Task | None = None
    tries: int = 0

    def send(self, lines: list[str]) -> None:
        if lines and not self.writer.is_closing():
            self.writer.write("".join(line + "\r\n" for line in lines).encode())


@dataclass
class _Listener:
    server: asyncio.AbstractServer
    unix_path: Path | None = None


class ManagementInterface:
    """An asyncio management server for openvpn's management clients."""

    def __init__(self, hooks: ManagementHooks, password: str | None = None) -> None:
        self.hooks = hooks
        self.password = password
        self.log = get_logger()
        self.states: list[StateEntry] = []
        self._connections: set[_Connection] = set()
        self._listener: _Listener | None = None
        self.address: tuple | str | None = None  # where it listens, once started

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, address: str, port: str) -> None:
        """Listen on `address port` (TCP) or on the socket path `address` when port is unix."""
        try:
            if port == "unix":
                path = Path(address)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # a stale socket from an earlier run, as openvpn does
                server = await asyncio.start_unix_server(self._serve, path=str(path))
                self._listener = _Listener(server, path)
                self.address = str(path)
                self.log.info("MANAGEMENT: unix domain socket listening on %s", path)
            else:
                server = await asyncio.start_server(self._serve, host=address, port=int(port))
                self._listener = _Listener(server)
                self.address = server.sockets[0].getsockname()
                self.log.info("MANAGEMENT: TCP Socket listening on [AF_INET%s]%s:%d",
                              "6" if ":" in address else "", *self.address[:2])
        except (OSError, ValueError) as exc:
            raise ManagementError(f"management: cannot listen on {address} {port}: {exc}") from exc

    async def close(self) -> None:
        """Stop listening, end every session, remove the unix socket."""
        for conn in list(self._connections):
            self._end(conn)
        if self._listener is not None:
            self._listener.server.close()
            await self._listener.server.wait_closed()
            if self._listener.unix_path is not None:
                with contextlib.suppress(OSError):
                    self._listener.unix_path.unlink()
            self._listener = None

    # -- notifications from the server ------------------------------------------

    def set_state(self, name: str, description: str = "", local_ip: str = "",
                  local_ip6: str = "", remote: str = "", local: str = "") -> None:
        """Record a state change and tell the sessions that asked (`state on`)."""
        entry = StateEntry(int(time.time()), name, description, local_ip, local_ip6,
                           remote, local)
        self.states.append(entry)
        del self.states[:-100]  # a bounded history, like openvpn's
        for conn in self._connections:
            if conn.state_realtime and conn.authenticated:
                conn.send([">STATE:" + entry.line()])

    def notify(self, line: str) -> None:
        """Send a real-time `>...` line to every authenticated session."""
        for conn in self._connections:
            if conn.authenticated:
                conn.send([line])

    # -- sessions ----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer, authenticated=self.password is None)
        self._connections.add(conn)
        if conn.authenticated:
            conn.send([GREETING])
        else:
            writer.write(PASSWORD_PROMPT.encode())
        try:
            while not writer.is_closing():
                raw = await reader.readline()
                if not raw:
                    break
                line = raw[:_MAX_LINE].decode("utf-8", "replace").strip("\r\n")
                if not self._line(conn, line):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._end(conn)

    def _end(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if conn.bytecount_task is not None:
            conn.bytecount_task.cancel()
        with contextlib.suppress(Exception):
            conn.writer.close()

    def _line(self, conn: _Connection, line: str) -> bool:
        """Handle one input line; False ends the session."""
        if not conn.authenticated:
            return self._password(conn, line)
        try:
            words = split_line(line, Location("management"))
        except ConfigError as exc:
            conn.send([f"ERROR: {exc.reason}"])
            return True
        if not words:
            return True
        if words[0] in ("exit", "quit"):
            return False
        conn.send(self.command(words, conn))
        return True

    def _password(self, conn: _Connection, line: str) -> bool:
        assert self.password is not None
        if hmac.compare_digest(line.encode(), self.password.encode()):
            conn.authenticated = True
            conn.send(["SUCCESS: password is correct", GREETING])
            return True
        conn.tries += 1
        conn.send(["ERROR: bad password"])
        if conn.tries >= _PASSWORD_TRIES:
            self.log.warning("MAN: client connection rejected after %d failed password "
                             "attempts", _PASSWORD_TRIES)
            return False
        conn.writer.write(PASSWORD_PROMPT.encode())
        return True

    # -- commands ----------------------------------------------------------------

    def command(self, words: list[str], conn: _Connection | None = None) -> list[str]:
        """The reply lines for one command (also usable without a socket, in tests)."""
        name, args = words[0], words[1:]
        handler = _COMMANDS.get(name)
        if handler is None:
            return [UNKNOWN]
        need = _NEEDS.get(name, 0)
        if len(args) < need:
            plural = "s" if need > 1 else ""
            return [f"ERROR: the '{name}' command requires {need} parameter{plural}"]
        if self.hooks.statistics is not None and name in _SERVER_COMMANDS:
            return [f"ERROR: The '{name}' command is not supported by the current daemon mode"]
        return handler(self, args, conn)

    def _help(self, args: list[str], conn: _Connection | None) -> list[str]:
        return [f"Management Interface for {self._title()}", "Commands:", *_HELP, "END"]

    def _version(self, args: list[str], conn: _Connection | None) -> list[str]:
        if args:  # `version N`: the client announces its version; openvpn says nothing
            return []
        return [f"OpenVPN Version: {self._title()}", f"Management Version: {MANAGEMENT_VERSION}",
                "END"]

    def _title(self) -> str:
        snapshot = self.hooks.snapshot()
        return title(snapshot.dco, snapshot.engine)

    def _pid(self, args: list[str], conn: _Connection | None) -> list[str]:
        return [f"SUCCESS: pid={os.getpid()}"]

    def _nclients(self, args: list[str], conn: _Connection | None) -> list[str]:
        return [f"SUCCESS: nclients={len(self.hooks.snapshot().clients)}"]

    def _load_stats(self, args: list[str], conn: _Connection | None) -> list[str]:
        clients = self.hooks.snapshot().clients if self.hooks.statistics is None else []
        if self.hooks.totals is not None:
            rx, tx = self.hooks.totals()
        else:
            rx = sum(c.bytes_received for c in clients)
            tx = sum(c.bytes_sent for c in clients)
        return [f"SUCCESS: nclients={len(clients)},bytesin={rx},bytesout={tx}"]

    def _status(self, args: list[str], conn: _Connection | None) -> list[str]:
        if self.hooks.statistics is not None:  # a client's one format, whatever n says
            return self.hooks.statistics()
        version = _atoi(args[0]) if args else 0
        try:
            return render(self.hooks.snapshot(), version or self.hooks.status_version)
        except StatusError:
            return ["ERROR: bad status format version number"]

    def _state(self, args: list[str], conn: _Connection | None) -> list[str]:
        out: list[str] = []
        for parm in args[:2] or ["1"]:
            if parm in ("on", "off"):
                if conn is not None:
                    conn.state_realtime = parm == "on"
                out.append(f"SUCCESS: real-time state notification set to {parm.upper()}")
            elif parm == "all" or _atoi(parm) > 0:
                n = len(self.states) if parm == "all" else _atoi(parm)
                out += [e.line() for e in self.states[-n:]] if n else []
                out.append("END")
            else:
                out.append("ERROR: state parameter must be 'on' or 'off' or some number n "
                           "or 'all'")
        return out

    def _kill(self, args: list[str], conn: _Connection | None) -> list[str]:
        victim = args[0]
        host, _, port_text = victim.partition(":")
        if host and port_text:
            try:
                addr = ipaddress.IPv4Address(host)
            except ValueError:
                return [f"ERROR: error parsing IP address: {host}"]
            port = _atoi(port_text)
            if not 0 < port < 65536:
                return [f"ERROR: port number is out of range: {port_text}"]
            n = self.hooks.kill_by_address(str(addr), port)
            if n > 0:
                return [f"SUCCESS: {n} client(s) at address {addr}:{port} killed"]
            return [f"ERROR: client at address {addr}:{port} not found"]
        if host:
            n = self.hooks.kill_by_cn(host)
            if n > 0:
                return [f"SUCCESS: common name '{host}' found, {n} client(s) killed"]
            return [f"ERROR: common name '{host}' not found"]
        return ["ERROR: kill parse"]

    def _client_kill(self, args: list[str], conn: _Connection | None) -> list[str]:
        if not args[0].isdigit():
            return [f"ERROR: cannot parse CID: {args[0]}"]
        message = args[1] if len(args) > 1 else "RESTART"
        if self.hooks.kill_by_cid(int(args[0]), message):
            return ["SUCCESS: client-kill command succeeded"]
        return ["ERROR: client-kill command failed"]

    def _signal(self, args: list[str], conn: _Connection | None) -> list[str]:
        name = args[0].upper()
        if name not in ("SIGHUP", "SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT"):
            return [f"ERROR: signal '{args[0]}' is not a known signal type"]
        if self.hooks.signal is None or not self.hooks.signal(name):
            return [f"ERROR: signal '{args[0]}' is currently ignored"]
        return [f"SUCCESS: signal {name} thrown"]

    def _bytecount(self, args: list[str], conn: _Connection | None) -> list[str]:
        seconds = _atoi(args[0])
        if conn is not None:
            if conn.bytecount_task is not None:
                conn.bytecount_task.cancel()
                conn.bytecount_task = None
            if seconds > 0:
                conn.bytecount_task = asyncio.get_running_loop().create_task(
                    self._bytecount_loop(conn, seconds))
        return ["SUCCESS: bytecount interval changed"]

    async def _bytecount_loop(self, conn: _Connection, seconds: int) -> None:
        """Every `seconds`: `>BYTECOUNT_CLI:cid,in,out` for every client (server mode),
        `>BYTECOUNT:in,out` of the link (client and p2p)."""
        while True:
            await asyncio.sleep(seconds)
            try:
                conn.send(self._bytecounts())
            except Exception as exc:  # the notifier must survive a bad snapshot
                self.log.warning("management: bytecount: %s", exc)

    def _bytecounts(self) -> list[str]:
        if self.hooks.statistics is not None and self.hooks.totals is not None:
            return [">BYTECOUNT:{},{}".format(*self.hooks.totals())]
        return [f">BYTECOUNT_CLI:{c.client_id},{c.bytes_received},{c.bytes_sent}"
                for c in self.hooks.snapshot().clients]


_Handler = Callable[[ManagementInterface, list[str], "_Connection | None"], list[str]]
_COMMANDS: dict[str, _Handler] = {
    "help": ManagementInterface._help,
    "version": ManagementInterface._version,
    "pid": ManagementInterface._pid,
    "nclients": ManagementInterface._nclients,
    "load-stats": ManagementInterface._load_stats,
    "status": ManagementInterface._status,
    "state": ManagementInterface._state,
    "kill": ManagementInterface._kill,
    "client-kill": ManagementInterface._client_kill,
    "signal": ManagementInterface._signal,
    "bytecount": ManagementInterface._bytecount,
}
_NEEDS = {"kill": 1, "client-kill": 1, "signal": 1, "bytecount": 1}


def _atoi(text: str) -> int:
    """C's atoi: the leading digits, 0 when there are none."""
    digits = ""
    for ch in text.strip():
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def read_password_file(path: Path) -> str:
    """The management password: the file's first line (openvpn reads it the same way)."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ManagementError(f"management: cannot read password file {path}: "
                              f"{exc.strerror}") from exc
    if not lines or not lines[0]:
        raise ManagementError(f"management: password file {path} is empty")
    return lines[0]


def listen_args(address: str, port: str) -> tuple[str, str]:
    """Validate `management` arguments early, for a one-line error before the server runs."""
    if port != "unix" and not (port.isdigit() and 0 < int(port) < 65536):
        raise ManagementError(f"management: bad port {port!r} (a number, or 'unix')")
    return address, port

