"""The project's Python side in a guest: the host's virtualenv where the guest root has the
host's Python, else the root's own Python with the native engine built for it.

The bookworm root has the host's /usr/bin/python3, so the host's venv (same path, shared
with the tree) runs there unchanged. The sid root has a newer Python: the venv's packages
and its _native build do not fit it, so the project's dependencies come from Debian
packages in the root, and `ensure_native` builds xdp_ovpn._native for that Python in
place in the tree (an ABI-tagged .so beside the host's, like any in-place build), from
a chroot on the host: natively compiled, seconds instead of minutes in an emulated guest.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from xdp_ovpn.vm.rootfs import Flavour, run


def venv_python(project: Path) -> str | None:
    """The major.minor of the project's venv ("3.11"), None without a venv."""
    try:
        cfg = (project / ".venv/pyvenv.cfg").read_text()
    except OSError:
        return None
    found = re.search(r"^version(?:_info)?\s*=\s*(\d+\.\d+)", cfg, re.MULTILINE)
    return found.group(1) if found else None


def venv_fits(root: Path, project: Path) -> bool:
    """Whether the host's venv runs in `root`: the root has the interpreter it was made for."""
    version = venv_python(project)
    return version is not None and (root / f"usr/bin/python{version}").exists()


def ensure_native(root: Path, flavour: Flavour, project: Path, log: Path | None) -> None:
    """Build xdp_ovpn._native for the root's python3 unless the venv serves the root (or
    the root cannot build it: bookworm without a venv runs the python engine, as before).

    setuptools rebuilds only when a source is newer than the .so, so this is cheap when
    nothing changed. The tree is bound into the chroot in a private mount namespace of the
    build's own: nothing stays mounted on the host.
    """
    if venv_fits(root, project) or not flavour.builds_native:
        return
    project = project.resolve()
    inner = root / str(project).lstrip("/")
    inner.mkdir(parents=True, exist_ok=True)  # the mount point; the guest makes it anyway
    build = f"cd {shlex.quote(str(project))} && python3 setup.py -q build_ext --inplace"
    script = (
        "set -e; "
        f"mount --bind /dev {shlex.quote(str(root / 'dev'))}; "
        f"mount --bind {shlex.quote(str(project))} {shlex.quote(str(inner))}; "
        f"exec chroot {shlex.quote(str(root))} sh -c {shlex.quote(build)}"
    )
    run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], log,
        what="build xdp_ovpn._native in the guest root",
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
