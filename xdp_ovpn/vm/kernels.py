"""Debian kernels for the guest: resolve "6.1" to a package, install image + headers into the
guest root, find its DCO module (the in-kernel `ovpn` where the kernel ships it, as 7.2
does; else ovpn-dco built with dkms, recording success or the compiler's reason), and make
its initramfs. 6.1 and 6.12 come from bookworm, 7.2 from sid (`root_flavour`).

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
from xdp_ovpn.vm.rootfs import BOOKWORM, SID, Flavour, chroot, chroot_mounts, run

VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+([.+-][0-9A-Za-z.+-]*)?$")
# Kernel lines (major.minor) that only Debian sid has; they boot with the sid root.
SID_KERNELS = ("7.2",)
IN_KERNEL_DCO = "ovpn"  # drivers/net/ovpn, mainline since 6.16
DKMS_DCO = "ovpn-dco-v2"  # openvpn-dco-dkms
# The generic signed image only: no -rt-, -cloud-, -unsigned or -dbg variants.
IMAGE_RE = re.compile(r"^linux-image-([0-9]+\.[0-9]+\.[0-9]+(?:-[0-9]+)?(?:\+deb[0-9]+)?-amd64)$")


@dataclass(frozen=True)
class Kernel:
    version: str  # as requested, e.g. "6.1"
    release: str  # uname -r in the guest, e.g. "6.1.0-56-amd64"
    vmlinuz: Path
    initrd: Path
    dco: dict  # {"built": bool, "detail": str, "module": str}: its DCO module, if any

    def describe(self) -> str:
        return f"Debian {self.release}"

    @property
    def dco_module(self) -> str:
        """The module openvpn's DCO needs in this kernel (kernel.json before 7.2 lacks it)."""
        return self.dco.get("module", DKMS_DCO)


def root_flavour(version: str) -> Flavour:
    """Which guest root boots kernel `version`: sid for the lines only sid has."""
    line = ".".join(version.split("-")[0].split("+")[0].split(".")[:2])
    return SID if line in SID_KERNELS else BOOKWORM


def check_version(version: str) -> None:
    """Refuse a malformed version before anything slow happens."""
    if not VERSION_RE.match(version):
        raise KernelNotFound(f"not a kernel version: {version!r} (try 6.1, 6.12 or 7.2)")


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
    """The kernel's own ovpn module if it ships one, else dkms install ovpn-dco for
    `release`; a failed build is a result, not an error."""
    moddir = root / "lib/modules" / release
    if own := sorted(moddir.glob(f"kernel/drivers/net/ovpn/{IN_KERNEL_DCO}.ko*")):
        return {"built": True, "module": IN_KERNEL_DCO,
                "detail": f"in-kernel {own[0].relative_to(moddir)}"}
    confs = list((root / "usr/src").glob("ovpn-dco-*/dkms.conf"))
    if not confs:
        return {"built": False, "module": DKMS_DCO,
                "detail": "no in-kernel ovpn and openvpn-dco-dkms is not installed in the guest"}
    conf = confs[0].read_text()
    name = re.search(r'PACKAGE_NAME="([^"]+)"', conf)
    ver = re.search(r'PACKAGE_VERSION="([^"]+)"', conf)
    if not (name and ver):
        return {"built": False, "module": DKMS_DCO, "detail": f"cannot parse {confs[0]}"}
    module = f"{name.group(1)}/{ver.group(1)}"
    with chroot_mounts(root):
        out = run(["chroot", str(root), "dkms", "install", module, "-k", release], log,
                  what="dkms install", check=False)
    built = list((root / "lib/modules" / release).rglob("ovpn-dco-v2.ko*"))
    if built:
        return {"built": True, "module": DKMS_DCO, "detail": f"dkms built {module} for {release}"}
    make_log = root / "var/lib/dkms" / module / "build/make.log"
    text = make_log.read_text(errors="replace") if make_log.exists() else out
    errors = [ln.strip() for ln in text.splitlines() if "error:" in ln]
    reason = errors[0] if errors else (text.strip().splitlines() or ["no output"])[-1]
    return {"built": False, "module": DKMS_DCO,
            "detail": f"dkms build of {module} failed: {_short(reason)}"}


def _short(line: str) -> str:
    """Drop the build-tree path prefix from a compiler error line."""
    return re.sub(r"^\S*/(drivers/\S+)", r"\1", line)[:200]


def kernel_summary(kernel: Kernel) -> dict:
    data = asdict(kernel)
    data["vmlinuz"], data["initrd"] = str(kernel.vmlinuz), str(kernel.initrd)
    return data
