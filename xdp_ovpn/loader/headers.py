"""Find a kernel header tree bcc can compile against.

bcc needs a tree holding both `include/linux/kconfig.h` (the arch-independent part) and
`include/generated/autoconf.h` (the configured part). Debian ships these as two packages,
`linux-headers-<abi>-common` and `linux-headers-<abi>-<flavour>`, joined only through the
`build` and `source` links under /lib/modules/<release>; BCC_KERNEL_SOURCE pointed at either
half alone fails. So a split pair is merged into a small tree of symlinks in a cache dir.

Order: $XDP_OVPN_KERNEL_HEADERS if set (and only it), then the running kernel's
/lib/modules entry, then any other installed headers, newest first. XDP programs only touch
uapi structures, which are stable, so another version's headers work with a warning.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from xdp_ovpn.loader.errors import HeadersNotFound

ENV_HEADERS = "XDP_OVPN_KERNEL_HEADERS"
ENV_CACHE = "XDP_OVPN_CACHE_DIR"
DEFAULT_CACHE = Path("/var/cache/xdp-ovpn")
MODULES = Path("/lib/modules")
USR_SRC = Path("/usr/src")

KCONFIG = Path("include/linux/kconfig.h")
AUTOCONF = Path("include/generated/autoconf.h")
STAMP = ".xdp-ovpn-sources"


@dataclass(frozen=True)
class KernelHeaders:
    path: Path  # value for BCC_KERNEL_SOURCE: a complete tree
    version: str  # the release the headers were built for, e.g. "6.1.0-56-amd64"
    matches_running_kernel: bool
    warning: str | None = None


def find_kernel_headers(cache_dir: Path | None = None) -> KernelHeaders:
    """Return a usable header tree, merging a Debian split pair if needed."""
    running = platform.release()
    override = os.environ.get(ENV_HEADERS)
    if override is not None:
        # Honoured strictly: a user (or a test) pointing here means "these or nothing".
        tree = Path(override)
        if not _complete(tree):
            raise HeadersNotFound(f"${ENV_HEADERS}={override} is not a kernel header tree")
        version = _tree_version(tree) or running
        return _result(tree, version, running)

    cache = (cache_dir or Path(os.environ.get(ENV_CACHE, DEFAULT_CACHE))) / "kernel-headers"
    tried: list[str] = []
    for version, build, source in _candidates(running):
        if _complete(build):
            return _result(build, version, running)
        if source is not None and (source / KCONFIG).is_file() and (build / AUTOCONF).is_file():
            return _result(_merged(cache / version, common=source, arch=build), version, running)
        tried.append(version)
    detail = f" (incomplete: {', '.join(tried)})" if tried else ""
    raise HeadersNotFound(
        f"no kernel headers for {running} or any other version{detail};"
        " install linux-headers-amd64 or set $" + ENV_HEADERS
    )


def _result(tree: Path, version: str, running: str) -> KernelHeaders:
    matches = version == running
    warning = None
    if not matches:
        warning = (
            f"using {version} headers for running kernel {running}"
            " (fine for XDP: uapi structures are stable)"
        )
    return KernelHeaders(tree, version, matches, warning)


def _complete(tree: Path) -> bool:
    return (tree / KCONFIG).is_file() and (tree / AUTOCONF).is_file()


def _tree_version(tree: Path) -> str | None:
    release = tree / "include/config/kernel.release"
    try:
        return release.read_text().strip() or None
    except OSError:
        return None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def _candidates(running: str) -> list[tuple[str, Path, Path | None]]:
    """(version, build, source) triples: the running kernel first, then newest first."""
    found: dict[str, tuple[Path, Path | None]] = {}
    if MODULES.is_dir():
        for entry in MODULES.iterdir():
            build = entry / "build"
            if build.is_dir():
                source = entry / "source"
                found[entry.name] = (build, source if source.is_dir() else None)
    # Header packages installed without a matching kernel image have no /lib/modules entry.
    for arch in USR_SRC.glob("linux-headers-*"):
        m = re.fullmatch(r"linux-headers-(\d+\.\d+\.\d+-\d+)-(.+)", arch.name)
        if m is None or m.group(2).startswith("common"):
            continue
        common = USR_SRC / f"linux-headers-{m.group(1)}-common"
        found.setdefault(f"{m.group(1)}-{m.group(2)}", (arch, common if common.is_dir() else None))
    order = sorted(found, key=lambda v: (v != running, [-n for n in _version_key(v)]))
    return [(v, *found[v]) for v in order]


def _overlays(arch: Path) -> list[Path]:
    """The configured parts of the arch (flavour) tree that the common tree lacks."""
    rels = [Path("include/config"), Path("include/generated")]
    rels += [g.relative_to(arch) for g in arch.glob("arch/*/include/generated")]
    return [r for r in rels if (arch / r).exists()]


def _merged(dst: Path, common: Path, arch: Path) -> Path:
    """Build (or reuse) a symlink tree joining common and arch at dst; race-safe."""
    common, arch = common.resolve(), arch.resolve()
    stamp = f"{common}\n{arch}\n"
    if _valid(dst, stamp):
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        # Stale or broken: move it aside first so a racing reader never sees it half-removed.
        trash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        with contextlib.suppress(FileNotFoundError):  # another process got there first
            os.rename(dst, trash / "tree")
        shutil.rmtree(trash, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.new-", dir=dst.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; other users' bcc must read it too
        _link_tree(tmp, common, arch, _overlays(arch))
        (tmp / STAMP).write_text(stamp)
        try:
            os.rename(tmp, dst)  # atomic; fails if a racing process already placed one
        except OSError:
            if not _valid(dst, stamp):
                raise
    except OSError as exc:
        raise HeadersNotFound(f"cannot build merged headers in {dst.parent}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst


def _link_tree(dst: Path, common: Path, arch: Path, overlays: list[Path]) -> None:
    """Symlink every entry of common into dst, with the overlay paths taken from arch.

    Only the directories on the way to an overlay are real; everything else is one link.
    """
    parents = {p for o in overlays for p in o.parents if p != Path(".")}

    def fill(rel: Path) -> None:
        here = dst / rel
        here.mkdir(exist_ok=True)
        if (common / rel).is_dir():
            for entry in (common / rel).iterdir():
                sub = rel / entry.name
                if sub in parents:
                    fill(sub)
                elif sub not in overlays:
                    os.symlink(entry, here / entry.name)
        for o in overlays:
            if o.parent == rel:
                os.symlink(arch / o, here / o.name)
        for p in parents:
            if p.parent == rel and not (here / p.name).exists():
                fill(p)

    fill(Path("."))


def _valid(tree: Path, stamp: str) -> bool:
    try:
        return (tree / STAMP).read_text() == stamp and _complete(tree)
    except OSError:
        return False
