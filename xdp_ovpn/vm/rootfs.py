"""The Debian guest roots: debootstrap plus the packages the project needs inside a VM.

Two roots, each built once (temp dir, renamed when complete) and topped up when its package
list grows: BOOKWORM in <cache>/root, the host's own Debian, whose Python runs the host's
virtualenv, for the 6.1 and 6.12 kernels; SID in <cache>/root-sid for sid's kernel (7.2),
with openvpn 2.7 and sid's Python, whose libraries come from Debian packages instead.
Kernels are added by `kernels.py`. A root is shared read-only into every guest, so one
copy serves all of its kernels.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from xdp_ovpn.vm.cache import building, locked, unmount_all
from xdp_ovpn.vm.errors import BuildError

SUITE = "bookworm"
# Where the host's apt finds Debian: the guest root and the lab's sid root use the same.
APT_SOURCES = (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list"))

# What the tests need in the guest. Python libraries also come from the project's own
# virtualenv (shared at the same path); the Debian ones are the fallback without it.
GUEST_PACKAGES = (
    "python3", "python3-bpfcc", "python3-cryptography", "python3-openssl",
    "python3-pyroute2", "python3-click", "python3-pytest",
    "openvpn", "openvpn-dco-dkms", "iproute2", "iperf3", "iputils-ping", "ethtool",
    "kmod", "procps", "busybox-static", "tcpdump", "strace",
    # The fast-path tests build the native engine under ASan/UBSan (dkms brings gcc).
    "python3-dev", "libc6-dev", "libssl-dev",
)
# sid's Python is not the host's, so the host's virtualenv cannot serve it: the project's
# dependencies come from Debian, and gcc + headers build the native engine for it.
SID_PACKAGES = (
    "python3", "python3-bpfcc", "python3-cryptography", "python3-openssl",
    "python3-pyroute2", "python3-click", "python3-pytest", "python3-hypothesis",
    "python3-setuptools", "python3-dev", "gcc", "libc6-dev", "libssl-dev",
    "openvpn", "iproute2", "iperf3", "iputils-ping", "ethtool",
    "kmod", "procps", "busybox-static", "tcpdump", "strace",
)
STAMP = "etc/xdp-ovpn-vm-packages"

# dkms would build ovpn-dco at every kernel install and abort the install where the build
# fails (6.12); kernels.py builds it explicitly per kernel and records the outcome instead.
DKMS_HOOKS = ("etc/kernel/postinst.d/dkms", "etc/kernel/header_postinst.d/dkms")

APT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
}


def debian_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str:
    """The Debian archive URI the host's apt uses (deb822 `URIs:` or a one-line `deb`)."""
    for uri in _apt_uris(sources):
        if not uri.endswith("-security"):
            return uri
    raise BuildError(f"no Debian mirror found in {', '.join(map(str, sources))}")


def security_mirror(sources: tuple[Path, ...] = APT_SOURCES) -> str | None:
    """The Debian security archive URI the host's apt uses, if any."""
    return next((uri for uri in _apt_uris(sources) if uri.endswith("-security")), None)


def _apt_uris(sources: tuple[Path, ...]) -> Iterator[str]:
    """Every archive URI in the readable `sources`, in order, without a trailing slash."""
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if m := re.match(r"URIs:\s*(.+)", line, re.IGNORECASE):
                yield from (uri.rstrip("/") for uri in m.group(1).split())
            elif m := re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)", line):
                yield m.group(1).rstrip("/")


@dataclass(frozen=True)
class Flavour:
    """One kind of guest root: which Debian suite, which packages, where in the cache."""

    name: str  # the directory under the cache
    suite: str
    packages: tuple[str, ...]

    @property
    def dkms(self) -> bool:
        return "openvpn-dco-dkms" in self.packages

    @property
    def builds_native(self) -> bool:
        """Has what building xdp_ovpn._native for its own Python takes (native.py)."""
        return {"gcc", "python3-dev", "libssl-dev"} <= set(self.packages)


BOOKWORM = Flavour("root", SUITE, GUEST_PACKAGES)
SID = Flavour("root-sid", "sid", SID_PACKAGES)


def guest_sources(mirror: str, security: str | None, suite: str = SUITE) -> str:
    """The guest's sources.list: the host's mirror for `suite` (and its security archive;
    sid, being unstable, has neither -updates nor -security)."""
    lines = [f"deb {mirror} {suite} main"]
    if suite != "sid":
        lines.append(f"deb {mirror} {suite}-updates main")
        if security is not None:
            lines.append(f"deb {security} {suite}-security main")
    return "\n".join(lines) + "\n"


def ensure_root(cache: Path, log: Path | None = None, flavour: Flavour = BOOKWORM) -> Path:
    """Return <cache>/<flavour.name>, building or topping it up first if needed."""
    root = cache / flavour.name
    with locked(cache):
        if not root.exists():
            started = time.monotonic()
            with building(root) as tmp:
                _debootstrap(tmp, flavour.suite, log)
                _install_packages(tmp, flavour, log)
            _note(log, f"guest root {flavour.suite} built in {time.monotonic() - started:.0f} s")
        elif _stamp(root) != _wanted(flavour):
            _install_packages(root, flavour, log)
    return root


def _wanted(flavour: Flavour) -> str:
    return " ".join(sorted(flavour.packages))


def _stamp(root: Path) -> str:
    try:
        return (root / STAMP).read_text().strip()
    except OSError:
        return ""


def _debootstrap(root: Path, suite: str, log: Path | None) -> None:
    run(["debootstrap", "--variant=minbase", suite, str(root), debian_mirror()], log,
        what=f"debootstrap {suite}")


def _install_packages(root: Path, flavour: Flavour, log: Path | None) -> None:
    (root / "etc/apt/sources.list").write_text(
        guest_sources(debian_mirror(), security_mirror(), flavour.suite))
    if flavour.suite == "sid":
        # sid's Release file is valid for a week only; a mirror that lags behind (or a
        # snapshot) would otherwise stop apt-get update here, as debootstrap did not.
        (root / "etc/apt/apt.conf.d/99xdp-ovpn-sid").write_text(
            'Acquire::Check-Valid-Until "false";\n')
    # No daemons may start inside the chroot while packages install.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    with chroot_mounts(root):
        chroot(root, ["dpkg", "--configure", "-a"], log)  # recover an interrupted install
        chroot(root, ["apt-get", "update", "-qq"], log)
        # openvpn-dco-dkms installs first with no kernel headers present: nothing builds.
        for hook in DKMS_HOOKS if flavour.dkms else ():
            chroot(root, ["dpkg-divert", "--local", "--rename", "--divert",
                          f"/{hook}.disabled", "--add", f"/{hook}"], log)
        chroot(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                      *flavour.packages], log)
        chroot(root, ["apt-get", "clean"], log)
    (root / STAMP).write_text(_wanted(flavour) + "\n")


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    """/proc and /dev/pts inside the root for package scripts; always unmounted after."""
    try:
        for fs, point in (("proc", "proc"), ("devpts", "dev/pts")):
            (root / point).mkdir(parents=True, exist_ok=True)
            run(["mount", "-t", fs, fs, str(root / point)], None, what=f"mount {point}")
        yield
    finally:
        unmount_all(root / "proc")
        unmount_all(root / "dev/pts")


def chroot(root: Path, cmd: list[str], log: Path | None) -> str:
    return run(["chroot", str(root), *cmd], log, what=" ".join(cmd[:3]), env=APT_ENV)


def run(cmd: list[str], log: Path | None, what: str, env: dict[str, str] | None = None,
        check: bool = True) -> str:
    """Run a build step, appending its output to `log`; BuildError with the last line."""
    out = subprocess.run(cmd, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    text = out.stdout + out.stderr
    _note(log, f"$ {' '.join(cmd)}\n{text}")
    if check and out.returncode != 0:
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        raise BuildError(f"{what} failed: {lines[-1] if lines else f'exit {out.returncode}'}")
    return text


def _note(log: Path | None, text: str) -> None:
    if log is not None:
        with open(log, "a") as fh:
            fh.write(text.rstrip("\n") + "\n")
