"""openvpn's script hooks: tls-verify, auth-user-pass-verify, client-connect,
client-disconnect, learn-address, with the environment, arguments and exit-code meaning
openvpn 2.6 gives them (run_command.c, ssl_verify.c, multi.c, env_set.c; checked against
the environment a real openvpn 2.6.14 server hands its scripts, see tests/ops).

What follows openvpn exactly: the variables and their spelling (`script_type` is
`user-pass-verify` for auth-user-pass-verify), the environment holding nothing but them
(no PATH), the command run with execve (no shell, no PATH search), `script-security`
gating (2 for scripts, 3 to see `password`), via-file's temporary file, the
client-connect config file, the deferred-auth control file. What is added: scripts run
as asyncio subprocesses, so the control plane never blocks on them, and a timeout (a
hung script counts as a failure) instead of openvpn's unbounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import os
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from xdp_ovpn.config import Config, ConfigError, Location, split_line
from xdp_ovpn.control import ccd
from xdp_ovpn.control.log import display_host, get_logger
from xdp_ovpn.control.status import time_string

DEFAULT_TIMEOUT = 30.0  # seconds a hook may run before it is killed and counted as failed
SCRIPT_SECURITY_WARNING = (
    "WARNING: External program may not be called unless '--script-security 2' or higher "
    "is enabled. See --help text or man page for detailed info."
)
_MAX_REASON = 256
# OpenSSL short names of subject attributes, as X509_{n}_{field} and tls_id_{n} use them.
_SHORT_NAMES = {
    NameOID.COMMON_NAME: "CN", NameOID.COUNTRY_NAME: "C", NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber", NameOID.GIVEN_NAME: "GN", NameOID.SURNAME: "SN",
    NameOID.TITLE: "title", NameOID.DOMAIN_COMPONENT: "DC", NameOID.USER_ID: "UID",
    NameOID.PSEUDONYM: "pseudonym", NameOID.STREET_ADDRESS: "street",
}  # fmt: skip


class ScriptSecurity(enum.IntEnum):
    """`script-security` levels (run_command.h SSEC_*)."""

    NONE = 0
    BUILT_IN = 1
    SCRIPTS = 2
    PASSWORDS = 3


class ScriptError(Exception):
    """A hook command that cannot be parsed: one line."""


@dataclass
class ScriptPeer:
    """What the server knows about one client when it runs a hook."""

    remote: tuple[str, int]
    common_name: str | None = None
    username: str | None = None
    chain: Sequence[x509.Certificate] = ()  # depth 0 = the client's certificate
    peer_info: Mapping[str, str] = field(default_factory=dict)  # IV_* / UV_* sent by it
    vpn_ipv4: str | None = None
    netmask4: str | None = None
    vpn_ipv6: str | None = None
    netbits6: int | None = None
    connected_since: float | None = None  # unix time (set at client-connect)


@dataclass(frozen=True)
class AuthResult:
    accepted: bool
    reason: str | None = None  # auth_failed_reason_file's text, for AUTH_FAILED,<reason>


@dataclass(frozen=True)
class ConnectResult:
    accepted: bool
    config: ccd.ClientConfig | None = None  # what the script wrote to its config file


def parse_command(cmd: str) -> list[str]:
    """A hook command (path plus arguments, openvpn quoting) as an argv."""
    try:
        argv = split_line(cmd, Location("script"))
    except ConfigError as exc:
        raise ScriptError(f"bad script command {cmd!r}: {exc.reason}") from None
    if not argv:
        raise ScriptError("empty script command")
    return argv


def _name_text(name: x509.Name) -> str:
    """openvpn's x509_get_subject: `CN=a, O=b` in certificate order, '+' for multi-valued."""
    rdns = []
    for rdn in name.rdns:
        rdns.append("+".join(f"{_short(a.oid)}={a.value}" for a in rdn))
    return ", ".join(rdns)


def _short(oid: x509.ObjectIdentifier) -> str:
    return _SHORT_NAMES.get(oid, oid.dotted_string)


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02x}" for b in data)


def cert_env(depth: int, cert: x509.Certificate) -> dict[str, str]:
    """The variables one certificate of the chain contributes (ssl_verify.c verify_cert_set_env)."""
    env = {}
    for attr in cert.subject:
        value = attr.value if isinstance(attr.value, str) else attr.value.hex()
        env[f"X509_{depth}_{_short(attr.oid)}"] = value
    serial = cert.serial_number
    env[f"tls_id_{depth}"] = _name_text(cert.subject)
    env[f"tls_digest_{depth}"] = _colon_hex(cert.fingerprint(hashes.SHA1()))
    env[f"tls_digest_sha256_{depth}"] = _colon_hex(cert.fingerprint(hashes.SHA256()))
    env[f"tls_serial_{depth}"] = str(serial)
    size = max(1, (serial.bit_length() + 7) // 8)
    env[f"tls_serial_hex_{depth}"] = _colon_hex(serial.to_bytes(size, "big"))
    return env


def common_name_of(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _address_env(prefix: str, remote: tuple[str, int]) -> dict[str, str]:
    host = display_host(remote[0])
    try:
        v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        v6 = False
    return {f"{prefix}_ip6" if v6 else f"{prefix}_ip": host, f"{prefix}_port": str(remote[1])}


def global_env(cfg: Config, dev: str, pid: int | None = None,
               start_time: float | None = None) -> dict[str, str]:
    """Variables openvpn sets at start for every script (init.c, options.c)."""
    env = {
        "config": str(cfg.source),
        "daemon": "0",
        "daemon_log_redirect": "1" if cfg.log else "0",
        "daemon_pid": str(pid if pid is not None else os.getpid()),
        "daemon_start_time": str(int(start_time if start_time is not None else time.time())),
        "dev": dev,
        "dev_type": cfg.dev_type,
        "local_port_1": str(cfg.lport),
        "proto_1": cfg.proto,
        "redirect_gateway": "0",
        "remote_port_1": str(cfg.rport),
        "script_context": "init",
        "tun_mtu": str(cfg.tun_mtu),
        "verb": str(cfg.verb),
    }
    if cfg.local:
        env["local_1"] = cfg.local
    for n, remote in enumerate(cfg.remotes, start=1):
        env[f"remote_{n}"] = remote.host
        env[f"remote_port_{n}"] = str(remote.port)
    if cfg.ifconfig:
        local, other = cfg.ifconfig
        env["ifconfig_local"] = local
        key = "ifconfig_netmask" if cfg.topology == "subnet" else "ifconfig_remote"
        env[key] = other
    if cfg.ifconfig_ipv6:
        iface, remote = cfg.ifconfig_ipv6
        env["ifconfig_ipv6_local"] = str(iface.ip)
        env["ifconfig_ipv6_netbits"] = str(iface.network.prefixlen)
        env["ifconfig_ipv6_remote"] = str(remote)
    env.update(cfg.setenv)
    return env


def _tmp_name(tmp_dir: Path, tag: str) -> Path:
    """openvpn's create_temp_file name: DIR/openvpn_<tag>_<32 hex>.tmp (not created)."""
    return tmp_dir / f"openvpn_{tag}_{secrets.token_hex(16)}.tmp"


class ScriptRunner:
    """Runs the configured hooks for the server; every public method is a coroutine."""

    def __init__(self, cfg: Config, dev: str, timeout: float = DEFAULT_TIMEOUT,
                 tmp_dir: Path | None = None, pid: int | None = None,
                 start_time: float | None = None) -> None:
        self.cfg = cfg
        self.security = ScriptSecurity(cfg.script_security)
        self.timeout = timeout
        self.tmp_dir = Path(tmp_dir or tempfile.gettempdir())
        self.base = global_env(cfg, dev, pid, start_time)
        self.log = get_logger()
        self._warned = False
        # Parse every configured command now: a bad one is a startup error, not a surprise.
        self.commands: dict[str, list[str]] = {}
        hooks = {
            "tls-verify": cfg.tls_verify,
            "user-pass-verify": cfg.auth_user_pass_verify[0] if cfg.auth_user_pass_verify
            else None,
            "client-connect": cfg.client_connect,
            "client-disconnect": cfg.client_disconnect,
            "learn-address": cfg.learn_address,
            "up": cfg.up,
            "route-up": cfg.route_up,
            "down": cfg.down,
        }
        for script_type, cmd in hooks.items():
            if cmd:
                self.commands[script_type] = parse_command(cmd)
        self.via_file = bool(cfg.auth_user_pass_verify and
                             cfg.auth_user_pass_verify[1] == "via-file")

    def configured(self, script_type: str) -> bool:
        return script_type in self.commands

    # -- the environment --------------------------------------------------------------

    def client_env(self, peer: ScriptPeer, trusted: bool = True) -> dict[str, str]:
        """Everything known about an authenticated client (what client-connect sees)."""
        env = dict(self.base)
        for depth, cert in enumerate(peer.chain):
            env.update(cert_env(depth, cert))
        env.update({k: v for k, v in peer.peer_info.items() if k.startswith(("IV_", "UV_"))})
        env.update(_address_env("untrusted", peer.remote))
        if trusted:
            env.update(_address_env("trusted", peer.remote))
        if peer.common_name is not None:
            env["common_name"] = peer.common_name
        if peer.username is not None:
            env["username"] = peer.username
        if peer.vpn_ipv4:
            env["ifconfig_pool_remote_ip"] = peer.vpn_ipv4
            if peer.netmask4:
                env["ifconfig_pool_netmask"] = peer.netmask4
        if peer.vpn_ipv6:
            env["ifconfig_pool_remote_ip6"] = peer.vpn_ipv6
            if peer.netbits6 is not None:
                env["ifconfig_pool_ip6_netbits"] = str(peer.netbits6)
            if self.cfg.ifconfig_ipv6:
                env["ifconfig_pool_local_ip6"] = str(self.cfg.ifconfig_ipv6[0].ip)
        if peer.connected_since is not None:
            env["time_ascii"] = time_string(peer.connected_since)
            env["time_unix"] = str(int(peer.connected_since))
        return env

    # -- running ------------------------------------------------------------------------

    async def run(self, script_type: str, args: Sequence[str],
                  env: Mapping[str, str]) -> int | None:
        """Run one hook; its exit status, or None when it was not allowed, failed to start,
        was killed by a signal or ran out of time."""
        if self.security < ScriptSecurity.SCRIPTS:
            if not self._warned:
                self.log.warning("%s", SCRIPT_SECURITY_WARNING)
                self._warned = True
            return None
        argv = [*self.commands[script_type], *args]
        full = {**env, "script_type": script_type}
        if self.security < ScriptSecurity.PASSWORDS:
            # env_set.c env_allowed(): password variables stay out below level 3.
            full = {k: v for k, v in full.items() if not k.startswith("password")}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=full, cwd=self.cfg.directory, stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True)
        except OSError as exc:
            self.log.warning("%s script %s cannot run: %s", script_type, argv[0], exc.strerror)
            return None
        try:
            status = await asyncio.wait_for(proc.wait(), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            self.log.warning("%s script %s killed after %g s", script_type, argv[0],
                             self.timeout)
            return None
        if status < 0:
            self.log.warning("%s script %s died from signal %d", script_type, argv[0], -status)
            return None
        return status

    # -- the hooks ----------------------------------------------------------------------

    async def tls_verify(self, peer: ScriptPeer) -> bool:
        """Run tls-verify for each certificate, the CA end first, as OpenSSL verifies;
        the first non-zero exit refuses the client. True when not configured."""
        if not self.configured("tls-verify"):
            return True
        env = dict(self.base)
        env.update(_address_env("untrusted", peer.remote))
        for depth in range(len(peer.chain) - 1, -1, -1):
            cert = peer.chain[depth]
            env.update(cert_env(depth, cert))
            if depth == 0 and (cn := common_name_of(cert)) is not None:
                env["common_name"] = cn
            subject = _name_text(cert.subject)
            status = await self.run("tls-verify", [str(depth), subject], env)
            if status != 0:
                self.log.info("%s VERIFY SCRIPT ERROR: depth=%d, %s",
                              _label(peer), depth, subject)
                return False
            self.log.info("%s VERIFY SCRIPT OK: depth=%d, %s", _label(peer), depth, subject)
        return True

    async def auth_user_pass_verify(self, peer: ScriptPeer, username: str, password: str,
                                    deferred_timeout: float | None = None) -> AuthResult:
        """Exit 0 accepts, 1 (any other) refuses, 2 defers to auth_control_file
        (1 or 0 written there later). Accepted when not configured."""
        if not self.configured("user-pass-verify"):
            return AuthResult(True)
        env = self.client_env(peer, trusted=False)
        env["username"] = username
        control, reason_file = _tmp_name(self.tmp_dir, "acf"), _tmp_name(self.tmp_dir, "afr")
        env["auth_control_file"] = str(control)
        env["auth_failed_reason_file"] = str(reason_file)
        args: list[str] = []
        up_file = None
        try:
            if self.via_file:
                up_file = _tmp_name(self.tmp_dir, "up")
                fd = os.open(up_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(f"{username}\n{password}\n")
                args = [str(up_file)]
            else:
                env["password"] = password
            status = await self.run("user-pass-verify", args, env)
            if status == 2:
                accepted = await self._deferred(control, deferred_timeout or
                                                float(self.cfg.hand_window))
            else:
                accepted = status == 0
            reason = None if accepted else _read_reason(reason_file)
            return AuthResult(accepted, reason)
        finally:
            for path in (up_file, control, reason_file):
                if path is not None:
                    with contextlib.suppress(OSError):
                        path.unlink()

    async def _deferred(self, control: Path, timeout: float) -> bool:
        """Wait for the deferred verdict: '1' accepts, '0' refuses, nothing by the timeout
        refuses (openvpn's hand-window)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                verdict = control.read_text()[:1]
                if verdict in ("0", "1"):
                    return verdict == "1"
            await asyncio.sleep(0.1)
        return False

    async def client_connect(self, peer: ScriptPeer) -> ConnectResult:
        """Non-zero exit refuses the client; what the script wrote to its config file (the
        last argument) applies like a CCD entry. Accepted when not configured."""
        if not self.configured("client-connect"):
            return ConnectResult(True)
        env = self.client_env(peer)
        config_file = _tmp_name(self.tmp_dir, "cc")
        deferred_file = _tmp_name(self.tmp_dir, "ccr")
        env["client_connect_config_file"] = str(config_file)
        env["client_connect_deferred_file"] = str(deferred_file)
        try:
            fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
            status = await self.run("client-connect", [str(config_file)], env)
            if status != 0:
                return ConnectResult(False)
            text = ccd.read_file(config_file) or ""
            return ConnectResult(True, ccd.parse(text, str(config_file)) if text.strip() else None)
        finally:
            for path in (config_file, deferred_file):
                with contextlib.suppress(OSError):
                    path.unlink()

    async def client_disconnect(self, peer: ScriptPeer, bytes_received: int, bytes_sent: int,
                                now: float | None = None) -> None:
        """Run client-disconnect with the byte counts and the session's duration; openvpn
        ignores its exit status."""
        if not self.configured("client-disconnect"):
            return
        env = self.client_env(peer)
        env["bytes_received"] = str(bytes_received)
        env["bytes_sent"] = str(bytes_sent)
        since = peer.connected_since if peer.connected_since is not None else time.time()
        env["time_duration"] = str(int((now if now is not None else time.time()) - since))
        await self.run("client-disconnect", [], env)

    async def learn_address(self, operation: str, address: str,
                            peer: ScriptPeer | None = None) -> bool:
        """`add`/`update` ADDRESS CN with the client's environment, `delete` ADDRESS with
        none (as openvpn); False when an add/update is refused. True when not configured."""
        if not self.configured("learn-address"):
            return True
        if operation == "delete" or peer is None:
            await self.run("learn-address", ["delete", address], {})
            return True
        status = await self.run("learn-address",
                                [operation, address, peer.common_name or ""],
                                self.client_env(peer))
        return status == 0


def _label(peer: ScriptPeer) -> str:
    return f"{display_host(peer.remote[0])}:{peer.remote[1]}"


def _read_reason(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        text = path.read_text(errors="replace").strip().splitlines()
        if text and text[0]:
            return text[0][:_MAX_REASON]
    return None

