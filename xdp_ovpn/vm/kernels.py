"""Debian kernels for the guest: resolve "6.1" to a package, install image + headers into the
guest root, build ovpn-dco for it with dkms (recording success or the compiler's reason), and
make its initramfs.

Each requested version gets <cache>/kernels/<version>/ holding `kernel.json` and `initrd.img`,
built in a temp dir and renamed when complete; the image itself stays in the root's /boot.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from xdp_ovpn.vm.cache import building, locked
from xdp_ovpn.vm.errors import BuildError, KernelNotFound
from xdp_ovpn.vm.initramfs import build_initramfs
from xdp_ovpn.vm.rootfs import chroot, chroot_mounts, run

VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+([.+-][0-9A-Za-z.+-]*)?$")
# The generic signed image only: no -rt-, -cloud-, -unsigned or -dbg variants.
IMAGE_RE = re.compile(r"^linux-image-([0-9]+\.[0-9]+\.[0-9]+(?:-[0-9]+)?(?:\+deb[0-9]+)?-amd64)$")


@dataclass(frozen=True)
class Kernel:
    version: str  # as requested, e.g. "6.1"
    release: str  # uname -r in the guest, e.g. "6.1.0-56-amd64"
    vmlinuz: Path
    initrd: Path
    dco: dict  # {"built": bool, "detail": str}: did openvpn-dco-dkms build for it

    def describe(self) -> str:
        return f"Debian {self.release}"


def check_version(version: str) -> None:
    """Refuse a malformed version before anything slow happens."""
    if not VERSION_RE.match(version):
        raise KernelNotFound(f"not a kernel version: {version!r} (try 6.1 or 6.12)")


def ensure_kernel(cache: Path, root: Path, version: str, log: Path | None = None) -> Kernel:
    """Install (once) and return the newest Debian kernel matching `version`."""
    check_version(version)
    final = cache / "kernels" / version
    with locked(cache):
        if not (final / "kernel.json").exists():
            final.parent.mkdir(exist_ok=True)
            with building(final) as tmp:
                release = _resolve(root, version, log)
                _install(root, release, log)
                dco = _build_dco(root, release, log)
                build_initramfs(root, release, tmp / "initrd.img")
                (tmp / "kernel.json").write_text(json.dumps({"release": release, "dco": dco}))
    meta = json.loads((final / "kernel.json").read_text())
    vmlinuz = root / "boot" / f"vmlinuz-{meta['release']}"
    if not vmlinuz.exists():
        raise BuildError(f"{vmlinuz} vanished from the guest root; delete {final} to rebuild")
    return Kernel(version, meta["release"], vmlinuz, final / "initrd.img", meta["dco"])


def _resolve(root: Path, version: str, log: Path | None) -> str:
    return pick_release(chroot(root, ["apt-cache", "pkgnames", "linux-image-"], log).split(),
                        version)


def pick_release(package_names: list[str], version: str) -> str:
    """Newest release among `linux-image-<release>` names that is `version` or starts with it."""
    releases = [m.group(1) for n in package_names if (m := IMAGE_RE.match(n))]
    matching = [r for r in releases
                if r == version or r.startswith(f"{version}.") or r.startswith(f"{version}-")]
    if not matching:
        known = sorted({".".join(r.split(".")[:2]) for r in releases})
        raise KernelNotFound(f"no Debian kernel {version}; available: {', '.join(known)}")
    return max(matching, key=_natural)


def _natural(text: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def _install(root: Path, release: str, log: Path | None) -> None:
    with chroot_mounts(root):
        chroot(root, ["dpkg", "--configure", "-a"], log)
        chroot(root, ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                      f"linux-image-{release}", f"linux-headers-{release}"], log)
        chroot(root, ["apt-get", "clean"], log)


def _build_dco(root: Path, release: str, log: Path | None) -> dict:
    """dkms install ovpn-dco for `release`; a failed build is a result, not an error."""
    confs = list((root / "usr/src").glob("ovpn-dco-*/dkms.conf"))
    if not confs:
        return {"built": False, "detail": "openvpn-dco-dkms is not installed in the guest"}
    conf = confs[0].read_text()
    name = re.search(r'PACKAGE_NAME="([^"]+)"', conf)
    ver = re.search(r'PACKAGE_VERSION="([^"]+)"', conf)
    if not (name and ver):
        return {"built": False, "detail": f"cannot parse {confs[0]}"}
    module = f"{name.group(1)}/{ver.group(1)}"
    with chroot_mounts(root):
        out = run(["chroot", str(root), "dkms", "install", module, "-k", release], log,
                  what="dkms install", check=False)
    built = list((root / "lib/modules" / release).rglob("ovpn-dco-v2.ko*"))
    if built:
        return {"built": True, "detail": f"dkms built {module} for {release}"}
    make_log = root / "var/lib/dkms" / module / "build/make.log"
    text = make_log.read_text(errors="replace") if make_log.exists() else out
    errors = [ln.strip() for ln in text.splitlines() if "error:" in ln]
    reason = errors[0] if errors else (text.strip().splitlines() or ["no output"])[-1]
    return {"built": False, "detail": f"dkms build of {module} failed: {_short(reason)}"}


def _short(line: str) -> str:
    """Drop the build-tree path prefix from a compiler error line."""
    return re.sub(r"^\S*/(drivers/\S+)", r"\1", line)[:200]


def kernel_summary(kernel: Kernel) -> dict:
    data = asdict(kernel)
    data["vmlinuz"], data["initrd"] = str(kernel.vmlinuz), str(kernel.initrd)
    return data
