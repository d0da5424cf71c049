"""What a user gets from `pip install .` alone: a fresh virtualenv outside the checkout,
then the installed `xdp-ovpn doctor` and `xdp-ovpn run --data-path xdp`, run from another
directory with no checkout on the path (the BPF C found as package data).

The build runs on a copy of the checkout (setuptools writes build/ into its source tree)
that is deleted before anything runs, so nothing can still come from it. About 30-60 s:
pip builds the wheel (and any native extension) and installs the dependencies from its
cache or the index.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from xdp_ovpn.lab.openvpn import OpenVPNClient, OpenVPNServer, started
from xdp_ovpn.lab.pki import PKI

pytestmark = [pytest.mark.root, pytest.mark.bpf, pytest.mark.openvpn]

CHECKOUT = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = "/usr/bin/python3"  # python3-bpfcc is built for it, as in scripts/setup.sh
# What a build must not need: the developer's venv, VCS data, caches, earlier builds.
NOT_SOURCES = shutil.ignore_patterns(".venv", ".git", "build", "dist", "*.egg-info", "*.so",
                                     "__pycache__", ".pytest_cache", ".ruff_cache")
UNDERLAY = ("10.79.0.1/24", "10.79.0.2/24")


def clean_env() -> dict[str, str]:
    """This process's environment without anything that points Python at the checkout."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(bin directory of the fresh venv, an empty directory to run from)."""
    base = tmp_path_factory.mktemp("install")
    src, venv, elsewhere = base / "src", base / "venv", base / "elsewhere"
    shutil.copytree(CHECKOUT, src, ignore=NOT_SOURCES)
    elsewhere.mkdir()
    subprocess.run([DEBIAN_PYTHON, "-m", "venv", str(venv)], check=True)
    _link_bcc(venv)
    pip = subprocess.run([str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check",
                          str(src)], capture_output=True, text=True, env=clean_env(), cwd=base)
    assert pip.returncode == 0, f"pip install failed:\n{pip.stderr[-3000:]}"
    shutil.rmtree(src)
    return venv / "bin", elsewhere


def _link_bcc(venv: Path) -> None:
    """Debian's bcc into the venv, and nothing else of dist-packages (as setup.sh does)."""
    def python(exe: str, code: str) -> str:
        return subprocess.run([exe, "-c", code], check=True, capture_output=True,
                              text=True, env=clean_env()).stdout.strip()

    bcc = python(DEBIAN_PYTHON, "import bcc, os; print(os.path.dirname(bcc.__file__))")
    site = python(str(venv / "bin/python"),
                  "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site) / "bcc").symlink_to(bcc)


def test_the_installed_package_carries_its_data_and_nothing_from_the_checkout(
        installed: tuple[Path, Path]) -> None:
    bindir, elsewhere = installed
    code = ("import importlib.util, xdp_ovpn, xdp_ovpn.loader.classifier as c, "
            "xdp_ovpn.vm.qemu as q, xdp_ovpn.vm.guest.probe\n"
            "print(xdp_ovpn.__file__); print(c.SOURCE); print(q.STAGE2)\n"
            "print(importlib.util.find_spec('loader'))")
    out = subprocess.run([str(bindir / "python"), "-c", code], capture_output=True, text=True,
                         cwd=elsewhere, env=clean_env())
    assert out.returncode == 0, out.stderr
    package, source, stage2, top_level_loader = out.stdout.splitlines()
    venv = bindir.parent
    for path in (package, source, stage2):
        assert Path(path).is_relative_to(venv), path
        assert Path(path).is_file(), path
    assert top_level_loader == "None"  # the loader is xdp_ovpn.loader, not a top-level name


def test_installed_doctor_finds_the_xdp_path_usable(installed: tuple[Path, Path]) -> None:
    bindir, elsewhere = installed
    out = subprocess.run([str(bindir / "xdp-ovpn"), "doctor"], capture_output=True, text=True,
                         cwd=elsewhere, env=clean_env(), timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "The XDP data path can run on this machine." in out.stdout
    assert re.search(r"^bcc compile\s+ok", out.stdout, re.MULTILINE), out.stdout


def test_installed_run_carries_a_tunnel_over_xdp(installed: tuple[Path, Path], lab) -> None:
    bindir, elsewhere = installed
    srv, cli = lab.add_namespace("srv"), lab.add_namespace("cli")
    lab.link(srv, cli, addrs=UNDERLAY)
    server = OpenVPNServer(srv, PKI(), program="xdp-ovpn")
    # The installed console script, started from an empty directory, no PYTHONPATH.
    server.command = lambda: [  # type: ignore[method-assign]
        "env", "-u", "PYTHONPATH", "-C", str(elsewhere), str(bindir / "xdp-ovpn"), "run",
        "--config", str(server.config_path), "--data-path", "xdp"]
    client = OpenVPNClient(cli, server, remote=UNDERLAY[0].split("/")[0])
    with started(server), started(client):
        server.wait_for_log(r"Data path: xdp")
        cli.run(["ping", "-c", "3", "-i", "0.2", "-W", "3", server.tunnel_ipv4])
        stats = srv.run(["env", "-C", str(elsewhere), str(bindir / "xdp-ovpn"), "stats",
                         "-i", "veth0"]).stdout
    redirected = re.search(r"^\s*redirect\s+(\d+)$", stats, re.MULTILINE)
    assert redirected and int(redirected.group(1)) >= 3, stats  # the pings went through XDP
