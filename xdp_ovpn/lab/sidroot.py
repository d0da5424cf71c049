"""openvpn 2.7 for the lab: a Debian sid root, built once and cached, run by chroot.

Debian 12 ships openvpn 2.6; sid has 2.7. Rather than touch the host's packages, the
lab debootstraps a minimal sid root into <project cache>/sid-openvpn/root (built in a
temporary directory, renamed when complete, under the cache lock) and runs openvpn from
it inside a test namespace. The mirror is the one the host's apt already uses.

A chrooted command needs /dev (for /dev/net/tun) and the test's directory (configs and
logs are given by absolute paths) inside the root. `chroot_command` wraps the command in
a shell that makes those bind mounts itself in a mount namespace of its own (`unshare -m`,
private propagation), so the mounts are private to that process and vanish with it,
however it ends. Nothing is ever mounted in the host's namespace.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from xdp_ovpn.vm.cache import DEFAULT_CACHE, ENV_CACHE, building, locked
from xdp_ovpn.vm.errors import BuildError
from xdp_ovpn.vm.rootfs import debian_mirror, run

SUITE = "sid"
PACKAGES = ("openvpn", "iproute2", "iputils-ping", "iperf3")
OPENVPN_VERSION = "2.7"
STAMP = "etc/xdp-ovpn-sid-packages"


def cache_dir() -> Path:
    path = Path(os.environ.get(ENV_CACHE, DEFAULT_CACHE)) / "sid-openvpn"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_built() -> bool:
    """Whether the cached root is there and current (no build needed)."""
    return _stamp(cache_dir() / "root") == _wanted()


def ensure_root(log: Path | None = None) -> Path:
    """The cached sid root with openvpn 2.7, debootstrapped first if missing or outdated."""
    cache = cache_dir()
    root = cache / "root"
    with locked(cache):
        if _stamp(root) != _wanted():
            with building(root) as tmp:
                run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                     SUITE, str(tmp), debian_mirror()], log or cache / "build.log",
                    what="debootstrap sid")
                (tmp / STAMP).write_text(_wanted() + "\n")
    version = openvpn_version(root)
    if not version.startswith(f"OpenVPN {OPENVPN_VERSION}"):
        raise BuildError(f"{root} holds {version!r}, not OpenVPN {OPENVPN_VERSION}")
    return root


def _wanted() -> str:
    return f"{SUITE} " + " ".join(sorted(PACKAGES))


def _stamp(root: Path) -> str:
    try:
        return (root / STAMP).read_text().strip()
    except OSError:
        return ""


def openvpn_version(root: Path) -> str:
    """The first line of `openvpn --version` inside the root, e.g. 'OpenVPN 2.7.8 ...'."""
    out = subprocess.run(["chroot", str(root), "openvpn", "--version"],
                         capture_output=True, text=True)
    lines = out.stdout.strip().splitlines()
    return lines[0] if lines else ""


def chroot_command(root: Path, workdir: Path, cmd: list[str]) -> list[str]:
    """`cmd` run inside `root`, with /dev and `workdir` (same path, under /tmp) bound in.

    The mounts live in the command's own mount namespace and end with it.
    """
    workdir = workdir.resolve()
    if workdir.parts[:2] != ("/", "tmp"):
        raise ValueError(f"a chrooted endpoint's directory must be under /tmp, not {workdir}")
    inner = root / str(workdir).lstrip("/")
    script = (
        "set -e; "
        f"mount --bind /dev {shlex.quote(str(root / 'dev'))}; "
        # A tmpfs over the root's /tmp holds the mount point: the cached root stays as built.
        f"mount -t tmpfs xo-sid-tmp {shlex.quote(str(root / 'tmp'))}; "
        f"mkdir -p {shlex.quote(str(inner))}; "
        f"mount --bind {shlex.quote(str(workdir))} {shlex.quote(str(inner))}; "
        f'exec chroot {shlex.quote(str(root))} "$@"'
    )
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd]
