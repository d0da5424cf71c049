"""Boot a kernel with qemu over the shared guest root and run one command in it.

The command's output and exit status come back through the run directory (a writable 9p
share); the serial console streams to us meanwhile, and the part between the BEGIN and END
markers stage2.sh prints is echoed live. A guest that outlives the timeout is killed.
"""

from __future__ import annotations

import os
import selectors
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TextIO

from xdp_ovpn.vm.errors import GuestTimeout, VMError
from xdp_ovpn.vm.native import venv_fits
from xdp_ovpn.vm.pace import ENV_HOST_PACE, pace

STAGE2 = resources.files("xdp_ovpn.vm") / "stage2.sh"  # package data
BEGIN, END = "XO-VMTEST-BEGIN", "XO-VMTEST-END"
MEMORY_MB = 2048
# Two vCPUs where the host has them: the multi-worker tests need CPUs 0 and 1, and batching
# (several packets a wake-up) needs the sender and the data plane on different CPUs, as on
# any real gateway. TCG runs a host thread per vCPU.
VCPUS = min(2, os.cpu_count() or 1)


@dataclass
class GuestRun:
    returncode: int
    output: str  # the command's stdout+stderr
    console: str  # the whole serial console, boot messages included
    seconds: float
    accel: str


def boot(vmlinuz: Path, initrd: Path, root: Path, project: Path, command: list[str], *,
         accel: str, timeout: float, env: dict[str, str] | None = None,
         echo: TextIO | None = None) -> GuestRun:
    """Run `command` (cwd = project) in a guest; `echo` receives its output live."""
    run_dir = Path(tempfile.mkdtemp(prefix="xdp-ovpn-vm-"))
    try:
        _prepare_run_dir(run_dir, project, command, env or {}, venv_fits(root, project))
        argv = qemu_argv(vmlinuz, initrd, root, project, run_dir, accel)
        started = time.monotonic()
        console, finished = _supervise(argv, timeout, echo)
        seconds = time.monotonic() - started
        if not finished:
            raise GuestTimeout(f"guest did not finish within {timeout:.0f} s and was killed; "
                               f"last console line: {_last_line(console)}")
        try:
            rc = int((run_dir / "rc").read_text())
            output = (run_dir / "output").read_text(errors="replace")
        except (OSError, ValueError):
            raise VMError("guest stopped without an exit status (boot or init failure); "
                          f"last console line: {_last_line(console)}") from None
        return GuestRun(rc, output, console, seconds, accel)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _prepare_run_dir(run_dir: Path, project: Path, command: list[str],
                     env: dict[str, str], use_venv: bool) -> None:
    run_dir.chmod(0o755)
    (run_dir / "project").write_text(str(project))
    (run_dir / "stage2.sh").write_bytes(STAGE2.read_bytes())  # init runs it with /bin/sh
    path = "/usr/sbin:/usr/bin:/sbin:/bin"
    base = {"XO_PROJECT": str(project), "HOME": "/root", "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "XDP_OVPN_IN_VM": "1",
            ENV_HOST_PACE: f"{pace():.6f}"}  # the guest scales its waits by it
    if use_venv:
        # The host's venv works in the guest: same Debian Python, same path (see native.py).
        path = f"{project / '.venv/bin'}:{path}"
    else:
        # The root's own Python, its Debian libraries and the tree itself (see native.py).
        base["PYTHONPATH"] = str(project)
    base["PATH"] = path
    lines = [f"export {k}={shlex.quote(v)}" for k, v in {**base, **env}.items()]
    (run_dir / "env").write_text("\n".join(lines) + "\n")
    (run_dir / "cmd.sh").write_text(shlex.join(command) + "\n")


def qemu_argv(vmlinuz: Path, initrd: Path, root: Path, project: Path, run_dir: Path,
              accel: str) -> list[str]:
    cpu = "host" if accel == "kvm" else "max"
    append = "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init"
    shares = [(root, "xoroot", True), (project, "xoproject", True), (run_dir, "xorun", False)]
    argv = ["qemu-system-x86_64", "-accel", accel, "-cpu", cpu, "-m", str(MEMORY_MB),
            "-smp", str(VCPUS), "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot", "-serial", "stdio", "-kernel", str(vmlinuz), "-initrd", str(initrd),
            "-append", append, "-device", "virtio-rng-pci"]
    for path, tag, readonly in shares:
        opts = f"local,path={path},mount_tag={tag},security_model=none,multidevs=remap"
        argv += ["-virtfs", opts + (",readonly=on" if readonly else "")]
    return argv


def _supervise(argv: list[str], timeout: float, echo: TextIO | None) -> tuple[str, bool]:
    """Run qemu, streaming the console; kill it at the deadline. Returns (console, finished)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    chunks: list[str] = []
    deadline = time.monotonic() + timeout
    in_command = False
    pending = ""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not sel.select(min(left, 1.0)):
                    if proc.poll() is not None:
                        break
                    continue
                data = os.read(proc.stdout.fileno(), 65536)
                if not data:
                    break
                text = data.decode(errors="replace").replace("\r", "")
                chunks.append(text)
                if echo is not None:
                    pending += text
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        in_command = _echo_line(line, in_command, echo)
            else:
                return "".join(chunks), False
        proc.wait(timeout=10)
        return "".join(chunks), True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _echo_line(line: str, in_command: bool, echo: TextIO) -> bool:
    if line.startswith(BEGIN):
        return True
    if line.startswith(END):
        return False
    if in_command:
        echo.write(line + "\n")
        echo.flush()
    return in_command


def _last_line(console: str) -> str:
    lines = [ln.strip() for ln in console.split("\n") if ln.strip()]
    return lines[-1] if lines else "(no console output)"
