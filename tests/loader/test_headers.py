"""Kernel header discovery: env override, Debian split-pair merge, stale rebuild, races."""

from __future__ import annotations

import os
import platform
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from xdp_ovpn.loader import headers
from xdp_ovpn.loader.errors import HeadersNotFound
from xdp_ovpn.loader.headers import find_kernel_headers


def _fake_pair(root: Path, abi: str = "9.9.0-1") -> tuple[Path, Path]:
    """A miniature Debian common + amd64 header pair under root/usr/src."""
    common = root / f"usr/src/linux-headers-{abi}-common"
    arch = root / f"usr/src/linux-headers-{abi}-amd64"
    for rel in ("include/linux/kconfig.h", "include/uapi/linux/bpf.h", "arch/x86/include/asm/x.h"):
        (common / rel).parent.mkdir(parents=True, exist_ok=True)
        (common / rel).write_text("/* common */\n")
    for rel in ("include/generated/autoconf.h", "include/config/kernel.release",
                "arch/x86/include/generated/asm/y.h"):  # fmt: skip
        (arch / rel).parent.mkdir(parents=True, exist_ok=True)
        (arch / rel).write_text("/* arch */\n")
    (common / "Makefile").write_text("")
    return common, arch


@pytest.fixture
def fake_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(headers.ENV_HEADERS, raising=False)
    monkeypatch.setenv(headers.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setattr(headers, "MODULES", tmp_path / "lib/modules")
    monkeypatch.setattr(headers, "USR_SRC", tmp_path / "usr/src")
    return tmp_path


def test_env_override_is_used_strictly(tmp_path, monkeypatch):
    monkeypatch.setenv(headers.ENV_HEADERS, str(tmp_path))
    with pytest.raises(HeadersNotFound, match="not a kernel header tree"):
        find_kernel_headers()


def test_env_override_complete_tree_is_returned(fake_system, monkeypatch):
    _fake_pair(fake_system)
    tree = find_kernel_headers().path
    monkeypatch.setenv(headers.ENV_HEADERS, str(tree))
    assert find_kernel_headers().path == tree


def test_split_pair_is_merged_into_a_complete_tree(fake_system):
    _fake_pair(fake_system)
    found = find_kernel_headers()
    assert found.version == "9.9.0-1-amd64"
    assert found.path == fake_system / "cache/kernel-headers/9.9.0-1-amd64"
    assert not found.matches_running_kernel and "9.9.0-1-amd64" in (found.warning or "")
    for rel in ("include/linux/kconfig.h", "include/generated/autoconf.h",
                "include/uapi/linux/bpf.h", "arch/x86/include/asm/x.h",
                "arch/x86/include/generated/asm/y.h", "Makefile"):  # fmt: skip
        assert (found.path / rel).is_file(), rel
    assert find_kernel_headers() == found  # idempotent


def test_running_kernel_modules_entry_is_preferred(fake_system):
    _fake_pair(fake_system, "9.9.0-1")
    common, arch = _fake_pair(fake_system, "1.0.0-1")
    mod = fake_system / "lib/modules" / platform.release()
    mod.mkdir(parents=True)
    (mod / "build").symlink_to(arch)
    (mod / "source").symlink_to(common)
    found = find_kernel_headers()
    assert found.matches_running_kernel and found.warning is None
    assert (found.path / "include/linux/kconfig.h").is_file()


def test_newest_version_wins_otherwise(fake_system):
    _fake_pair(fake_system, "5.10.0-9")
    _fake_pair(fake_system, "6.1.0-56")
    assert find_kernel_headers().version == "6.1.0-56-amd64"


def test_broken_cache_is_rebuilt(fake_system):
    _fake_pair(fake_system)
    tree = find_kernel_headers().path
    (tree / "include/generated").unlink()
    assert find_kernel_headers().path == tree
    assert (tree / "include/generated/autoconf.h").is_file()


def test_missing_headers_raise_one_line(fake_system):
    with pytest.raises(HeadersNotFound) as info:
        find_kernel_headers()
    assert "\n" not in str(info.value)


def _find_in_child(root: str) -> str:
    headers.MODULES = Path(root) / "lib/modules"
    headers.USR_SRC = Path(root) / "usr/src"
    os.environ[headers.ENV_CACHE] = str(Path(root) / "cache")
    return str(find_kernel_headers().path)


def test_racing_processes_agree(fake_system):
    _fake_pair(fake_system)
    with ProcessPoolExecutor(4) as pool:
        paths = set(pool.map(_find_in_child, [str(fake_system)] * 8))
    assert len(paths) == 1
    tree = Path(paths.pop())
    assert (tree / "include/generated/autoconf.h").is_file()
    assert [p.name for p in tree.parent.iterdir()] == [tree.name]  # no temp dirs left
