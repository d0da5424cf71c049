"""`ifconfig-pool-persist FILE [N]`: remember which common name had which addresses.

openvpn's file format (pool.c): one `CN,IPv4,IPv6` line per client, either address may be
empty, `#`/`;` lines are comments; read at start, rewritten every N seconds and at exit.
The same file works for openvpn and xdp-ovpn, so a gateway can switch either way without
renumbering its clients. Unparsable lines are skipped with a one-line note, as openvpn
warns and goes on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Lease:
    common_name: str
    ipv4: str | None = None
    ipv6: str | None = None


def parse(text: str) -> tuple[dict[str, Lease], list[str]]:
    """Leases by common name (the last line for a name wins), and one note per bad line."""
    leases: dict[str, Lease] = {}
    notes: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip("\r")
        if not line or line[0] in "#;":
            continue
        fields = line.split(",")
        if len(fields) < 2 or not fields[0]:
            notes.append(f"pool: line {n}: expected CN,IPv4[,IPv6]")
            continue
        cn, v4, v6 = fields[0], fields[1], fields[2] if len(fields) > 2 else ""
        try:
            ipv4 = str(ipaddress.IPv4Address(v4)) if v4 else None
        except ValueError:
            notes.append(f"pool: invalid IPv4 ({v4}) for CN={cn}")
            ipv4 = None
        try:
            ipv6 = str(ipaddress.IPv6Address(v6)) if v6 else None
        except ValueError:
            notes.append(f"pool: invalid IPv6 ({v6}) for CN={cn}")
            ipv6 = None
        if ipv4 or ipv6:
            leases[cn] = Lease(cn, ipv4, ipv6)
    return leases, notes


def render(leases: dict[str, Lease]) -> str:
    return "".join(f"{le.common_name},{le.ipv4 or ''},{le.ipv6 or ''}\n"
                   for le in leases.values())


def load(path: Path) -> tuple[dict[str, Lease], list[str]]:
    """The leases in FILE; none (and no note) when it does not exist yet."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return {}, []
    except OSError as exc:
        return {}, [f"pool: cannot read {path}: {exc.strerror}"]
    return parse(text)


def save(path: Path, leases: dict[str, Lease]) -> None:
    """Write FILE atomically (temporary file + rename); OSError is the caller's to log."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(render(leases))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class PersistFile:
    """The pool file of a running server: saved atomically, or rewritten in place through a
    descriptor opened at start once the directory is no longer writable (after `user`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        with contextlib.suppress(OSError):
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def save(self, leases: dict[str, Lease]) -> None:
        """OSError when neither way works (the caller logs it)."""
        try:
            save(self.path, leases)
        except OSError:
            if self._fd is None:
                raise
            data = render(leases).encode()
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, data)
            os.ftruncate(self._fd, len(data))
            return
        if self._fd is not None:  # the held descriptor points at the replaced inode
            with contextlib.suppress(OSError):
                fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
                os.close(self._fd)
                self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
