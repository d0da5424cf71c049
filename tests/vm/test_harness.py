"""The VM harness's host-side logic, without booting anything."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from xdp_ovpn.vm import pace
from xdp_ovpn.vm.accel import ENV_ACCEL, choose_accel
from xdp_ovpn.vm.cache import building
from xdp_ovpn.vm.command import vmtest
from xdp_ovpn.vm.errors import BuildError, KernelNotFound
from xdp_ovpn.vm.guest.probe import group_skips
from xdp_ovpn.vm.initramfs import _Cpio, module_load_order
from xdp_ovpn.vm.kernels import Kernel, _build_dco, pick_release, root_flavour
from xdp_ovpn.vm.matrix import DCO_KERNELS, GUEST_KERNELS, _interop_failures
from xdp_ovpn.vm.native import ensure_native, venv_fits, venv_python
from xdp_ovpn.vm.qemu import _prepare_run_dir
from xdp_ovpn.vm.report import render_markdown
from xdp_ovpn.vm.rootfs import BOOKWORM, SID, debian_mirror, guest_sources, security_mirror

NAMES = [
    "linux-image-6.1.0-9-amd64", "linux-image-6.1.0-56-amd64", "linux-image-6.1.0-56-rt-amd64",
    "linux-image-6.1.0-56-amd64-unsigned", "linux-image-6.12.117+deb12-amd64",
    "linux-image-6.12.9+deb12-amd64", "linux-image-6.12-amd64", "linux-image-cloud-amd64",
]


def test_version_picks_the_newest_generic_signed_image() -> None:
    assert pick_release(NAMES, "6.1") == "6.1.0-56-amd64"  # 56 > 9 numerically
    assert pick_release(NAMES, "6.12") == "6.12.117+deb12-amd64"
    assert pick_release(NAMES, "6.1.0-9-amd64") == "6.1.0-9-amd64"


def test_unknown_version_names_the_available_ones() -> None:
    with pytest.raises(KernelNotFound, match=r"no Debian kernel 5\.10; available: 6\.1, 6\.12"):
        pick_release(NAMES, "5.10")


def test_modules_load_dependencies_first_and_skip_builtins(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
        "kernel/net/9p/9pnet.ko:\n"
        "kernel/fs/netfs/netfs.ko:\n"
        "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko\n"
    )
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    order = [p.name for p in module_load_order(tmp_path, ("9pnet_virtio", "9p"))]
    assert order == ["9pnet.ko", "9pnet_virtio.ko.xz", "netfs.ko", "9p.ko"]


def test_missing_module_is_a_build_error(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text("")
    (tmp_path / "modules.builtin").write_text("")
    with pytest.raises(BuildError, match="overlay not found"):
        module_load_order(tmp_path, ("overlay",))


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """A reader for the archive format, written from the newc layout, to check the writer."""
    entries, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        pos += 110
        name = data[pos:pos + namesize - 1].decode()
        pos += namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return entries
        entries[name] = (mode, data[pos:pos + size])
        pos += size + (-size % 4)


def test_cpio_holds_files_links_and_the_console_node() -> None:
    cpio = _Cpio()
    cpio.directory("bin")
    cpio.file("init", b"#!/bin/sh\n", 0o755)
    cpio.symlink("bin/sh", "busybox")
    cpio.node("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    entries = _read_newc(cpio.finish())
    assert entries["init"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n")
    assert entries["bin/sh"] == (stat.S_IFLNK | 0o777, b"busybox")
    assert stat.S_ISCHR(entries["dev/console"][0]) and stat.S_ISDIR(entries["bin"][0])


def test_interrupted_build_leaves_nothing_that_looks_finished(tmp_path: Path) -> None:
    final = tmp_path / "root"
    with pytest.raises(RuntimeError), building(final) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert not final.exists() and not (tmp_path / "root.tmp").exists()
    with building(final) as tmp:
        (tmp / "whole").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]
    assert (final / "whole").exists()


def test_kvm_is_used_only_after_a_probe_boot_succeeds(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_ACCEL, raising=False)
    monkeypatch.setattr("os.access", lambda *_: True)
    monkeypatch.setattr("xdp_ovpn.vm.accel.PVM_MARKER", tmp_path / "no-kvm_pvm")
    boots: list[str] = []

    def failing_probe(accel: str, timeout: float) -> bool:
        boots.append(accel)
        return False

    assert choose_accel(tmp_path, "6.1.0-56-amd64", failing_probe)[0] == "tcg"
    assert choose_accel(tmp_path, "6.1.0-56-amd64", failing_probe)[0] == "tcg"
    assert boots == ["kvm"]  # the verdict is cached
    assert choose_accel(tmp_path, "6.12.1+deb12-amd64", lambda *_: True)[0] == "kvm"
    monkeypatch.setenv(ENV_ACCEL, "tcg")
    assert choose_accel(tmp_path, "6.12.1+deb12-amd64", lambda *_: True)[0] == "tcg"


def test_markdown_table_has_a_column_per_kernel_and_escapes_pipes() -> None:
    report = {"generated": "now", "commit": "abc", "columns": [
        {"kernel": "6.18 (host)", "where": "host, native", "seconds": 3,
         "cells": {"XDP native": {"status": "ok", "detail": "a|b"}}},
        {"kernel": "6.1.0-56-amd64", "where": "guest, tcg", "seconds": 90,
         "cells": {"XDP native": {"status": "FAIL", "detail": "no"},
                   "ovpn-dco loads": {"status": "ok", "detail": "yes"}}},
    ]}
    lines = render_markdown(report).splitlines()
    header = next(ln for ln in lines if ln.startswith("| feature"))
    assert "6.18 (host)" in header and "6.1.0-56-amd64" in header
    assert "| XDP native | **ok**: a\\|b | **FAIL**: no |" in lines
    assert "| ovpn-dco loads | – | **ok**: yes |" in lines


def test_cli_needs_exactly_one_of_kernel_or_matrix() -> None:
    result = CliRunner().invoke(vmtest, [])
    assert result.exit_code == 2
    assert "exactly one of --kernel VERSION or --matrix" in result.output


def test_cli_refuses_a_malformed_version_in_one_line_before_building() -> None:
    result = CliRunner().invoke(vmtest, ["--kernel", "../../etc"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: not a kernel version: '../../etc' (try 6.1, 6.12 or 7.2)")


def test_guest_root_uses_the_hosts_apt_mirror_and_its_security_archive(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text("Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n\n"
                       "Types: deb\nURIs: http://mirror.example/debian-security\n"
                       "Suites: bookworm-security\n")
    mirror, security = debian_mirror((sources,)), security_mirror((sources,))
    assert guest_sources(mirror, security).splitlines() == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main",
    ]
    assert "security" not in guest_sources(mirror, security_mirror((tmp_path / "none",)))


def test_sid_sources_have_no_updates_or_security_suite() -> None:
    assert guest_sources("http://m/debian", "http://m/debian-security", "sid") == (
        "deb http://m/debian sid main\n")


def test_kernel_7_2_boots_the_sid_root_and_older_lines_bookworm() -> None:
    assert root_flavour("7.2") is SID
    assert root_flavour("7.2.13+deb14-amd64") is SID
    for version in ("6.1", "6.12", "6.1.0-56-amd64", "6.12.117+deb12-amd64", "7.20"):
        assert root_flavour(version) is BOOKWORM
    assert BOOKWORM.dkms and not SID.dkms  # sid's 7.2 has ovpn in-kernel: no dkms there
    # bookworm runs the host's venv and its _native; sid builds its own.
    assert SID.builds_native and not BOOKWORM.builds_native
    assert {"openvpn", "python3-bpfcc", "python3-dev", "gcc", "libssl-dev"} <= set(SID.packages)


def test_sid_kernel_picks_its_image() -> None:
    names = ["linux-image-7.2.13+deb14-amd64", "linux-image-7.2.13+deb14-cloud-amd64",
             "linux-image-7.2.13+deb14-rt-amd64-dbg", "linux-image-amd64"]
    assert pick_release(names, "7.2") == "7.2.13+deb14-amd64"


def test_in_kernel_ovpn_is_the_dco_module_where_the_kernel_ships_it(tmp_path: Path) -> None:
    release = "7.2.13+deb14-amd64"
    assert _build_dco(tmp_path, release, None) == {
        "built": False, "module": "ovpn-dco-v2",
        "detail": "no in-kernel ovpn and openvpn-dco-dkms is not installed in the guest"}
    ovpn = tmp_path / "lib/modules" / release / "kernel/drivers/net/ovpn"
    ovpn.mkdir(parents=True)
    (ovpn / "ovpn.ko.xz").write_bytes(b"")
    dco = _build_dco(tmp_path, release, None)
    assert dco == {"built": True, "module": "ovpn",
                   "detail": "in-kernel kernel/drivers/net/ovpn/ovpn.ko.xz"}
    kernel = Kernel("7.2", release, tmp_path, tmp_path, dco)
    assert kernel.dco_module == "ovpn"
    # A 6.1 kernel.json written before the module was recorded still means ovpn-dco-v2.
    assert Kernel("6.1", "6.1.0-56-amd64", tmp_path, tmp_path,
                  {"built": True, "detail": "dkms"}).dco_module == "ovpn-dco-v2"


def test_the_hosts_venv_serves_only_a_root_with_its_python(tmp_path: Path) -> None:
    project, root = tmp_path / "project", tmp_path / "root"
    (project / ".venv").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    assert not venv_fits(root, project)  # no pyvenv.cfg: no venv
    (project / ".venv/pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.2\n")
    assert venv_python(project) == "3.11"
    (root / "usr/bin/python3.13").touch()
    assert not venv_fits(root, project)  # sid: another Python
    (root / "usr/bin/python3.11").touch()
    assert venv_fits(root, project)  # bookworm


def test_guest_env_uses_the_venv_or_the_roots_python_with_the_tree(tmp_path: Path) -> None:
    project = tmp_path / "project"
    for use_venv in (True, False):
        run_dir = tmp_path / f"run-{use_venv}"
        run_dir.mkdir()
        _prepare_run_dir(run_dir, project, ["true"], {}, use_venv)
        env = (run_dir / "env").read_text()
        assert (f"{project}/.venv/bin:" in env) is use_venv
        assert (f"export PYTHONPATH={project}\n" in env) is not use_venv
        assert re.search(r"^export XDP_OVPN_HOST_PACE=0\.\d+$", env, re.M)


def test_waits_scale_by_the_guests_pace_over_the_hosts(monkeypatch) -> None:
    monkeypatch.delenv(pace.ENV_SLOWDOWN, raising=False)
    monkeypatch.delenv(pace.ENV_HOST_PACE, raising=False)
    assert pace.scaled(10) == 10  # on the host: no factor
    monkeypatch.delenv(pace.ENV_SLOWDOWN)
    monkeypatch.setenv(pace.ENV_HOST_PACE, f"{pace.pace() / 6:.6f}")  # a host 6x as fast
    assert 3 < pace.slowdown() < 12
    assert os.environ[pace.ENV_SLOWDOWN]  # measured once, inherited by children
    monkeypatch.setenv(pace.ENV_SLOWDOWN, "100")
    assert pace.scaled(2) == 200


def test_markdown_has_a_comparison_section_per_dco_kernel() -> None:
    row = {"scenario": "xdp-ovpn, native engine", "mode": "Data path: xdp", "median_mbps": 50.0,
           "samples": [49.0, 51.0], "vs_bare": 0.25}
    result = {"seconds": 5, "rounds": 2, "openvpn": "OpenVPN 2.7.8 x86_64", "rows": [row]}
    report = {"generated": "now", "commit": "abc", "columns": [],
              "comparisons": [{"kernel": "6.1", "where": "tcg", "result": result},
                              {"kernel": "7.2", "where": "tcg", "error": "no result: boom"}]}
    text = render_markdown(report)
    assert "## Data paths compared (6.1 guest, tcg)" in text and "OpenVPN 2.7.8" in text
    assert "| xdp-ovpn, native engine | Data path: xdp | 50.0 | 0.250 | 49.0, 51.0 |" in text
    assert "## Data paths compared (7.2 guest, tcg)\n\nNot run: no result: boom" in text


def test_matrix_runs_dco_interop_on_6_1_with_dkms_and_7_2_with_the_sid_root() -> None:
    assert "7.2" in GUEST_KERNELS and set(DCO_KERNELS) <= set(GUEST_KERNELS)
    assert [root_flavour(k).name for k in DCO_KERNELS] == ["root", "root-sid"]
    assert root_flavour("6.1").dkms  # 6.1's DCO is ovpn-dco-v2, 7.2's the kernel's own


def _interop_run(kernel: str, status: str) -> dict:
    return {"kernel": kernel, "where": "tcg", "result": [
        {"pair": "openvpn+DCO client -> xdp-ovpn server",
         "checks": [{"check": "ping", "status": "ok", "detail": "3 received"},
                    {"check": "client uses DCO", "status": status, "detail": "x"}]}]}


def test_interop_failures_name_their_kernel() -> None:
    runs = [_interop_run("6.1", "ok"), _interop_run("7.2", "FAIL"),
            {"kernel": "7.2", "where": "not booted", "error": "boom"}]
    assert _interop_failures(runs) == [
        "DCO interop (7.2): openvpn+DCO client -> xdp-ovpn server: client uses DCO",
        "DCO interop (7.2): boom",
    ]
    assert _interop_failures(runs[:1]) == []


def test_markdown_has_an_interop_section_per_dco_kernel() -> None:
    report = {"generated": "now", "commit": "abc", "columns": [],
              "dco_interop": [_interop_run("6.1", "ok"), _interop_run("7.2", "FAIL")]}
    lines = render_markdown(report).splitlines()
    assert [ln for ln in lines if ln.startswith("## DCO interop")] == [
        "## DCO interop (6.1 guest, tcg)", "## DCO interop (7.2 guest, tcg)"]
    assert "| client uses DCO | **FAIL**: x |" in lines


def test_native_is_built_only_for_a_root_that_can_and_needs_to(tmp_path: Path) -> None:
    project, root = tmp_path / "project", tmp_path / "root"
    project.mkdir()
    root.mkdir()
    ensure_native(root, BOOKWORM, project, None)  # no venv, no compiler: the python engine
    with pytest.raises(BuildError, match=r"build xdp_ovpn\._native"):
        ensure_native(root, SID, project, tmp_path / "log")  # an empty root cannot chroot
    assert (root / str(project).lstrip("/")).is_dir()  # the tree's mount point was made


def test_fast_path_cell_names_skipped_tests_with_their_reason() -> None:
    lines = ["SKIPPED [2] tests/dataplane/test_xdppath.py:40: needs openvpn 2.6",
             "SKIPPED [1] tests/loader/test_steer.py:12: needs openvpn 2.6",
             "SKIPPED [1] tests/dataplane/test_xdppath.py:90: needs openvpn 2.6",
             "SKIPPED [1] tests/dataplane/test_io.py:7: needs bcc",
             "= 5 skipped, 90 passed in 500s ="]
    assert group_skips(lines) == (
        "skipped, needs openvpn 2.6: dataplane/test_xdppath.py (3), loader/test_steer.py (1); "
        "skipped, needs bcc: dataplane/test_io.py (1)")
    assert group_skips(lines[-1:]) == ""


class _Item:
    def __init__(self, *marks: pytest.MarkDecorator) -> None:
        self.marks = {m.mark.name: m.mark for m in marks}

    def get_closest_marker(self, name: str):
        return self.marks.get(name)


def test_realtime_tests_skip_with_their_reason_on_a_slow_cpu_only(monkeypatch) -> None:
    from tests.conftest import pytest_runtest_setup

    item = _Item(pytest.mark.realtime("a race decides it"))
    monkeypatch.setenv(pace.ENV_SLOWDOWN, "1.00")
    pytest_runtest_setup(item)  # runs on the host
    monkeypatch.setenv(pace.ENV_SLOWDOWN, "16.00")
    with pytest.raises(pytest.skip.Exception, match=r"^a race decides it; this CPU is 16x"):
        pytest_runtest_setup(item)
    pytest_runtest_setup(_Item())  # unmarked tests run anywhere
