"""The openvpn 2.7 root: the mirror comes from apt's config, and chrooted runs leave no mounts."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from xdp_ovpn.lab import sidroot
from xdp_ovpn.vm.cache import mounts_under
from xdp_ovpn.vm.errors import BuildError

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
"""


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "debian.sources").write_text(DEB822)
    assert sidroot.debian_mirror((tmp_path / "debian.sources",)) == "http://mirror.example/debian"


def test_mirror_from_a_one_line_sources_list(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text(
        "# deb http://commented.example/debian sid main\n"
        "deb http://security.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main\n"
    )
    missing = tmp_path / "missing.sources"
    assert sidroot.debian_mirror((missing, listing)) == "http://mirror.example/debian"


def test_no_mirror_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="no Debian mirror"):
        sidroot.debian_mirror((tmp_path / "none",))


def test_chrooted_directory_must_be_under_tmp() -> None:
    with pytest.raises(ValueError, match="under /tmp"):
        sidroot.chroot_command(Path("/srv/root"), Path("/var/lib/x"), ["true"])


@pytest.mark.root
@pytest.mark.openvpn27
def test_chrooted_command_sees_the_test_directory_and_leaves_no_mount() -> None:
    root = sidroot.ensure_root()
    with tempfile.TemporaryDirectory(prefix="xo-sidroot-", dir="/tmp") as tmp:
        (Path(tmp) / "hello").write_text("from the host\n")
        cmd = sidroot.chroot_command(root, Path(tmp), ["sh", "-c", f"cat {tmp}/hello; "
                                                       "test -c /dev/net/tun && openvpn --version"])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert out.startswith("from the host\nOpenVPN 2.7.")
    assert mounts_under(root) == []
    assert list((root / "tmp").iterdir()) == []
