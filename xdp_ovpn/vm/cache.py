"""The VM cache directory: where guest roots and kernels live, built atomically under a lock.

Everything slow (debootstrap, kernel packages, initramfs) is built once into a temporary
directory and renamed into place when complete, so an interrupted build leaves nothing that
looks finished. One lock file serialises builders across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from xdp_ovpn.vm.errors import BuildError

ENV_VM_CACHE = "XDP_OVPN_VM_CACHE"
ENV_CACHE = "XDP_OVPN_CACHE_DIR"  # the project-wide cache root (shared with the loader)
DEFAULT_CACHE = Path("/var/cache/xdp-ovpn")


def cache_dir() -> Path:
    """$XDP_OVPN_VM_CACHE, else <project cache>/vm."""
    if override := os.environ.get(ENV_VM_CACHE):
        path = Path(override)
    else:
        path = Path(os.environ.get(ENV_CACHE, DEFAULT_CACHE)) / "vm"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(cache: Path) -> Iterator[None]:
    """Hold the cache's build lock (blocking): one builder at a time."""
    with open(cache / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(path: Path) -> None:
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to descend into anything still mounted (a bound /proc or /dev)."""
    if not path.exists():
        return
    unmount_all(path)
    if mounts_under(path):
        raise BuildError(f"{path} still has mounts; refusing to delete it")
    shutil.rmtree(path)


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a fresh temp dir next to `final`; rename it to `final` only on success."""
    tmp = final.with_name(f"{final.name}.tmp")
    remove_tree(tmp)  # a previous interrupted build
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        remove_tree(tmp)
        raise
    unmount_all(tmp)
    if final.exists():
        old = final.with_name(f"{final.name}.old")
        remove_tree(old)
        final.rename(old)
        tmp.rename(final)
        remove_tree(old)
    else:
        tmp.rename(final)
