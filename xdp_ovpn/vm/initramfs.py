"""A minimal initramfs per kernel: static busybox, the modules needed to reach a 9p root,
and `init.sh`. Written as a newc cpio by hand, so the host needs no cpio or mkinitramfs.
"""

from __future__ import annotations

import lzma
import stat
from importlib import resources
from pathlib import Path

from xdp_ovpn.vm.errors import BuildError

# Enough to mount the shared root: virtio PCI transport, 9p over virtio, overlayfs; plus
# virtio-rng so early getrandom() does not stall under emulation.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_rng")
APPLETS = ("sh", "mount", "umount", "insmod", "mkdir", "cat", "echo", "switch_root",
           "reboot", "sleep")
INIT = resources.files("xdp_ovpn.vm") / "init.sh"  # package data


def build_initramfs(root: Path, release: str, dest: Path) -> None:
    """Write the initramfs for kernel `release` (installed in `root`) to `dest`."""
    busybox = root / "bin/busybox"
    if not busybox.exists():
        raise BuildError("busybox-static is missing from the guest root")
    archive = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "modules"):
        archive.directory(d)
    archive.node("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in APPLETS:
        archive.symlink(f"bin/{applet}", "busybox")
    archive.file("init", INIT.read_bytes(), 0o755)
    names = []
    for path in module_load_order(root / "lib/modules" / release, BOOT_MODULES):
        name = path.name.removesuffix(".xz")
        data = path.read_bytes()
        archive.file(f"modules/{name}", lzma.decompress(data) if path.suffix == ".xz" else data,
                     0o644)
        names.append(name)
    archive.file("modules.list", ("\n".join(names) + "\n").encode(), 0o644)
    dest.write_bytes(archive.finish())


def module_load_order(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The .ko files to insmod for `wanted`, dependencies first; built-in modules skipped."""
    try:
        dep_text = (moddir / "modules.dep").read_text()
        builtin = (moddir / "modules.builtin").read_text().split()
    except OSError as exc:
        raise BuildError(f"no module index in {moddir}: {exc.strerror}") from exc
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in dep_text.splitlines():
        target, _, rest = line.partition(":")
        deps[_modname(target)] = (target, [_modname(d) for d in rest.split()])
    builtins = {_modname(b) for b in builtin}
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order or name in builtins:
            return
        if name not in deps:
            raise BuildError(f"kernel module {name} not found in {moddir}")
        for dep in deps[name][1]:
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    for path in (deps[n][0] for n in order):
        if path.endswith(".zst"):
            raise BuildError(f"zstd-compressed modules are not supported: {path}")
    return [moddir / deps[n][0] for n in order]


def _modname(path: str) -> str:
    base = Path(path).name.split(".ko")[0]
    return base.replace("-", "_")


class _Cpio:
    """newc ("070701") archive writer: just enough for an initramfs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, b"")

    def file(self, name: str, data: bytes, perm: int) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def node(self, name: str, mode: int, rdev: tuple[int, int]) -> None:
        self._entry(name, mode, b"", rdev)

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return b"".join(self._parts)

    def _entry(self, name: str, mode: int, data: bytes, rdev: tuple[int, int] = (0, 0)) -> None:
        raw = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        self._ino += 1
        header = b"070701" + b"".join(f"{f:08x}".encode() for f in fields)
        self._parts += [header, raw, _pad(len(header) + len(raw)), data, _pad(len(data))]


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)
