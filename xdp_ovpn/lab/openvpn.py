"""Real openvpn (or our own `xdp-ovpn run`) as a lab endpoint: the interop oracle.

A `TunnelSpec` holds what both ends of a tunnel share (PKI, control-channel
wrapping and its keys, data cipher, underlay protocol, addressing) and writes
self-contained config texts with inline blocks. The same text runs under
`openvpn` or under `xdp-ovpn run --config`, so a test swaps either side by
choosing `program`:

    spec = TunnelSpec(PKI(), wrapping="tls-crypt", proto="udp6")
    with OpenVPNServer(ns_a, spec) as server, \\
         OpenVPNClient(ns_b, spec, remote="fd00:1::1", program="xdp-ovpn") as client:
        ns_b.run(["ping", "-c1", server.tunnel_ipv4])

openvpn is the host's 2.6 by default; `openvpn="2.7"` runs 2.7 from the cached Debian
sid root (`sidroot`), chrooted inside the same namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from xdp_ovpn.lab import sidroot
from xdp_ovpn.lab.netns import LabError, Namespace
from xdp_ovpn.lab.pki import PKI, Credential
from xdp_ovpn.vm.pace import scaled

READY = "Initialization Sequence Completed"
WRAPPINGS = ("none", "tls-auth", "tls-crypt", "tls-crypt-v2")
PROGRAMS = ("openvpn", "xdp-ovpn")
OPENVPN_VERSIONS = ("2.6", "2.7")  # the host's, and sid's in a chroot
_LOG_TAIL_LINES = 25


class OpenVPNError(LabError):
    """An endpoint did not start, died, or never logged what a test waited for."""


def genkey(kind: str, server_key: bytes | None = None) -> bytes:
    """A key made by `openvpn --genkey KIND` (secret, tls-crypt-v2-server, tls-crypt-v2-client;
    the client kind needs the server key)."""
    with tempfile.TemporaryDirectory(prefix="xo-genkey-") as tmp:
        cmd = ["openvpn"]
        if server_key is not None:
            (Path(tmp) / "server.key").write_bytes(server_key)
            cmd += ["--tls-crypt-v2", str(Path(tmp) / "server.key")]
        out_path = Path(tmp) / "out.key"
        cmd += ["--genkey", kind, str(out_path)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            reason = (out.stderr or out.stdout).strip()
            raise OpenVPNError(f"openvpn --genkey {kind} failed: {reason}")
        return out_path.read_bytes()


def _block(tag: str, content: bytes | str) -> str:
    text = content.decode() if isinstance(content, bytes) else content
    return f"<{tag}>\n{text.strip()}\n</{tag}>"


@dataclass
class TunnelSpec:
    """Settings both ends of a tunnel share, and the keys they are made with."""

    pki: PKI = field(default_factory=PKI)
    wrapping: str = "none"
    # The data-ciphers list of both ends (colon-separated); None leaves each its default.
    cipher: str | None = "AES-256-GCM"
    proto: str = "udp"  # underlay: udp, udp4, udp6
    port: int = 1194
    network: str = "10.8.0.0/24"  # server mode: tunnel subnet; p2p: local/peer from it
    network6: str | None = "fd00:8::/64"
    keepalive: tuple[int, int] = (10, 60)
    verb: int = 3
    _keys: dict[str, bytes] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.wrapping not in WRAPPINGS:
            raise ValueError(f"wrapping must be one of {WRAPPINGS}, not {self.wrapping!r}")

    # --------------------------------------------------------- keys

    def _key(self, name: str, kind: str, server_key: bytes | None = None) -> bytes:
        if name not in self._keys:
            self._keys[name] = genkey(kind, server_key)
        return self._keys[name]

    def wrap_key(self, server_side: bool, cn: str = "client") -> bytes | None:
        """The wrapping key text for one side (tls-crypt-v2: server key or cn's client key)."""
        if self.wrapping in ("tls-auth", "tls-crypt"):
            return self._key("static", "secret")
        if self.wrapping == "tls-crypt-v2":
            server_key = self._key("v2-server", "tls-crypt-v2-server")
            if server_side:
                return server_key
            return self._key(f"v2-client-{cn}", "tls-crypt-v2-client", server_key)
        return None

    # --------------------------------------------------------- addressing

    @property
    def net4(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.network)

    @property
    def net6(self) -> ipaddress.IPv6Network | None:
        return ipaddress.IPv6Network(self.network6) if self.network6 else None

    # --------------------------------------------------------- config texts

    def _common(self, dev: str, server_side: bool, cn: str, cred: Credential) -> list[str]:
        lines = [
            f"dev {dev}",
            f"proto {self.proto}",
            *([f"data-ciphers {self.cipher}"] if self.cipher else []),
            f"keepalive {self.keepalive[0]} {self.keepalive[1]}",
            f"verb {self.verb}",
            _block("ca", self.pki.ca_pem),
            _block("cert", cred.cert_pem),
            _block("key", cred.key_pem),
        ]
        key = self.wrap_key(server_side, cn)
        if key is not None:
            lines.append(_block(self.wrapping, key))
        if self.wrapping == "tls-auth":
            lines.append(f"key-direction {0 if server_side else 1}")
        return lines

    def _cred(self, cn: str, server_side: bool) -> Credential:
        cred = self.pki.issued.get(cn)
        if cred is None:
            cred = self.pki.server(cn) if server_side else self.pki.client(cn)
        return cred

    def server_config(
        self, dev: str = "tun0", cn: str = "server", extra: Sequence[str] = ()
    ) -> str:
        """A `server` (mode server, topology subnet) config with every material inline."""
        net = self.net4
        lines = [
            f"port {self.port}",
            "topology subnet",
            f"server {net.network_address} {net.netmask}",
        ]
        if self.net6:
            lines.append(f"server-ipv6 {self.net6}")
        lines += ["dh none", *self._common(dev, True, cn, self._cred(cn, True)), *extra]
        return "\n".join(lines) + "\n"

    def client_config(
        self, remote: str, dev: str = "tun0", cn: str = "client", extra: Sequence[str] = ()
    ) -> str:
        """A `client` (pull) config aimed at `remote`, with every material inline."""
        lines = [
            "client",
            f"remote {remote} {self.port}",
            "nobind",
            "remote-cert-tls server",
            *self._common(dev, False, cn, self._cred(cn, False)),
            *extra,
        ]
        return "\n".join(lines) + "\n"

    def p2p_addresses(self, tls_server: bool) -> tuple[str, str, str | None, str | None]:
        """Tunnel addresses of one p2p side: (local4, peer4, local6/bits, peer6)."""
        net, net6 = self.net4, self.net6
        mine, peer = (1, 2) if tls_server else (2, 1)
        local6 = f"{net6[mine]}/{net6.prefixlen}" if net6 else None
        return str(net[mine]), str(net[peer]), local6, str(net6[peer]) if net6 else None

    def p2p_config(
        self,
        tls_server: bool,
        remote: str | None = None,
        dev: str = "tun0",
        extra: Sequence[str] = (),
    ) -> str:
        """One side of a TLS peer-to-peer tunnel (no pull): tls-server or tls-client."""
        local4, peer4, local6, peer6 = self.p2p_addresses(tls_server)
        cn = "server" if tls_server else "client"
        lines = [f"port {self.port}", "tls-server\ndh none" if tls_server else "tls-client"]
        if remote:
            lines.append(f"remote {remote} {self.port}")
        if not tls_server:
            lines.append("remote-cert-tls server")
        lines.append(f"ifconfig {local4} {peer4}")
        if local6:
            lines.append(f"ifconfig-ipv6 {local6} {peer6}")
        lines += [*self._common(dev, tls_server, cn, self._cred(cn, tls_server)), *extra]
        return "\n".join(lines) + "\n"


class Endpoint:
    """One openvpn (or xdp-ovpn) process in a namespace, run from a config text."""

    def __init__(
        self,
        ns: Namespace,
        config: str,
        program: str = "openvpn",
        dev: str = "tun0",
        workdir: Path | None = None,
        ready: str = READY,  # a regex
        openvpn: str = "2.6",
    ) -> None:
        if program not in PROGRAMS:
            raise ValueError(f"program must be one of {PROGRAMS}, not {program!r}")
        if openvpn not in OPENVPN_VERSIONS:
            raise ValueError(f"openvpn must be one of {OPENVPN_VERSIONS}, not {openvpn!r}")
        self.ns = ns
        self._config = config
        self.program = program
        self.openvpn = openvpn
        self.dev = dev
        self.ready = ready
        self._own_workdir = workdir is None
        # A chrooted openvpn sees the directory at the same path, which must be under /tmp.
        tmp = "/tmp" if self.chrooted else None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"xo-{ns.tag}-", dir=tmp))
        self.config_path = self.workdir / f"{program}.conf"
        self.log_path = self.workdir / f"{program}.log"
        self.proc: subprocess.Popen | None = None
        self._final_log: str | None = None

    def config_text(self) -> str:
        return self._config

    @property
    def chrooted(self) -> bool:
        """openvpn 2.7 runs from the sid root."""
        return self.program == "openvpn" and self.openvpn == "2.7"

    def command(self) -> list[str]:
        if self.chrooted:
            cmd = ["openvpn", "--config", str(self.config_path)]
            return sidroot.chroot_command(sidroot.ensure_root(), self.workdir, cmd)
        if self.program == "openvpn":
            return ["openvpn", "--config", str(self.config_path)]
        return [sys.executable, "-m", "xdp_ovpn.cli", "run", "--config", str(self.config_path)]

    # --------------------------------------------------------- lifecycle

    def start(self, timeout: float = 20.0, wait: bool = True) -> Endpoint:
        """Write the config, start the process; by default wait for the ready line."""
        self._final_log = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config)
        self.config_path.chmod(0o600)  # it holds private keys inline
        with self.log_path.open("wb") as log:
            self.proc = self.ns.popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_for_ready(timeout)
        return self

    def wait_for_ready(self, timeout: float = 20.0) -> None:
        """Wait for the ready line; on failure stop the process (the error has the log tail)."""
        try:
            self.wait_for_log(self.ready, timeout)
        except OpenVPNError:
            self.stop()
            raise

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_workdir and self.workdir.exists():
            self._final_log = self.log()  # keep it readable after the directory is gone
            shutil.rmtree(self.workdir, ignore_errors=True)
        return proc.returncode if proc else None

    def __enter__(self) -> Endpoint:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --------------------------------------------------------- observing

    def log(self) -> str:
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def wait_for_log(self, pattern: str, timeout: float = 10.0, since: int = 0) -> re.Match:
        """Wait until the log (from byte offset `since`) matches the regex `pattern`."""
        regex = re.compile(pattern)
        timeout = scaled(timeout)  # the host's wait, as long as this CPU needs (vm.pace)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.log(), since)
            if found:
                return found
            if self.proc is not None and self.proc.poll() is not None:
                # One last read: the line may have landed just before exit.
                if found := regex.search(self.log(), since):
                    return found
                why = f"exited with status {self.proc.returncode}"
                break
            if time.monotonic() >= deadline:
                why = f"did not log /{pattern}/ within {timeout:g} s"
                break
            time.sleep(0.05)
        raise OpenVPNError(f"{self.program} in {self.ns.tag} {why}; log tail:\n{self.log_tail()}")

    def log_size(self) -> int:
        """The log's length now: pass as `since` to wait only for what comes next."""
        return len(self.log())

    def tun_addresses(
        self, dev: str | None = None
    ) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
        """Addresses on the TUN interface (global scope), as `ip addr` reports them."""
        out = self.ns.run(["ip", "-j", "addr", "show", "dev", dev or self.dev])
        addrs = []
        for link in json.loads(out.stdout or "[]"):
            for info in link.get("addr_info", []):
                if info.get("scope") == "global":
                    addrs.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}"))
        return addrs

    def tun_ipv4(self) -> ipaddress.IPv4Interface | None:
        return next((a for a in self.tun_addresses() if a.version == 4), None)

    def tun_ipv6(self) -> ipaddress.IPv6Interface | None:
        return next((a for a in self.tun_addresses() if a.version == 6), None)


class OpenVPNServer(Endpoint):
    """A server-mode endpoint: `OpenVPNServer(ns, spec)` or `(ns, pki, wrapping=...)`."""

    def __init__(
        self,
        ns: Namespace,
        spec: TunnelSpec | PKI | None = None,
        *,
        program: str = "openvpn",
        dev: str = "tun0",
        cn: str = "server",
        extra: Sequence[str] = (),
        workdir: Path | None = None,
        openvpn: str = "2.6",
        **spec_fields: object,
    ) -> None:
        self.spec = _spec(spec, spec_fields)
        config = self.spec.server_config(dev, cn, extra)
        super().__init__(ns, config, program, dev, workdir, openvpn=openvpn)

    @property
    def tunnel_ipv4(self) -> str:
        return str(self.spec.net4[1])

    @property
    def tunnel_ipv6(self) -> str | None:
        return str(self.spec.net6[1]) if self.spec.net6 else None


class OpenVPNClient(Endpoint):
    """A client (pull) endpoint; pass the server (or its spec) to share keys and settings."""

    def __init__(
        self,
        ns: Namespace,
        server: OpenVPNServer | TunnelSpec,
        remote: str,
        *,
        program: str = "openvpn",
        dev: str = "tun0",
        cn: str = "client",
        extra: Sequence[str] = (),
        workdir: Path | None = None,
        openvpn: str = "2.6",
    ) -> None:
        self.spec = server.spec if isinstance(server, OpenVPNServer) else server
        config = self.spec.client_config(remote, dev, cn, extra)
        super().__init__(ns, config, program, dev, workdir, openvpn=openvpn)


class OpenVPNPeer(Endpoint):
    """One side of a TLS p2p tunnel (tls-server or tls-client), addresses from the spec."""

    def __init__(
        self,
        ns: Namespace,
        spec: TunnelSpec,
        tls_server: bool,
        remote: str | None = None,
        *,
        program: str = "openvpn",
        dev: str = "tun0",
        extra: Sequence[str] = (),
        workdir: Path | None = None,
        openvpn: str = "2.6",
    ) -> None:
        self.spec = spec
        self.tls_server = tls_server
        config = spec.p2p_config(tls_server, remote, dev, extra)
        super().__init__(ns, config, program, dev, workdir, openvpn=openvpn)

    @property
    def tunnel_ipv4(self) -> str:
        return self.spec.p2p_addresses(self.tls_server)[0]

    @property
    def tunnel_ipv6(self) -> str | None:
        local6 = self.spec.p2p_addresses(self.tls_server)[2]
        return local6.split("/")[0] if local6 else None


@contextlib.contextmanager
def started(*endpoints: Endpoint, timeout: float = 20.0) -> Iterator[tuple[Endpoint, ...]]:
    """Start endpoints together (p2p peers wait for each other), wait until all are ready,
    and stop them all on exit."""
    try:
        for ep in endpoints:
            ep.start(wait=False)
        for ep in endpoints:
            ep.wait_for_ready(timeout)
        yield endpoints
    finally:
        for ep in reversed(endpoints):
            ep.stop()


def _spec(spec: TunnelSpec | PKI | None, fields: dict[str, object]) -> TunnelSpec:
    if isinstance(spec, TunnelSpec):
        if fields:
            raise TypeError("give either a TunnelSpec or its fields, not both")
        return spec
    return TunnelSpec(pki=spec or PKI(), **fields)  # type: ignore[arg-type]
