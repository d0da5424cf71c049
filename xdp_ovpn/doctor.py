"""`xdp-ovpn doctor`: probe what this machine offers the XDP data path.

Probes that attach programs or bind sockets run inside a scratch namespace
on a scratch veth pair (via `python -m xdp_ovpn.doctor --in-netns IF`), so
the host's interfaces are never touched.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "FAIL"

# Checks the XDP data path cannot run without; the rest are informational.
# Every probe catches broadly on purpose: any failure becomes one line of the table.
REQUIRED = (
    "BPF syscall",
    "bcc",
    "kernel headers",
    "bcc compile",
    "XDP attach",
    "AF_XDP bind",
    "TUN",
)


@dataclass
class Check:
    name: str
    status: str
    detail: str


def _bpf_syscall() -> Check:
    # BPF_MAP_CREATE of a one-entry array: the cheapest call that proves bpf() works.
    from xdp_ovpn.loader.syscall import MAP_CREATE, attr, bpf

    try:  # type=ARRAY, key 4 B, value 4 B, 1 entry
        fd = bpf(MAP_CREATE, attr("IIII", 2, 4, 4, 1))
    except OSError as exc:
        return Check("BPF syscall", FAIL, f"bpf() failed: {exc.strerror}")
    os.close(fd)
    return Check("BPF syscall", OK, "bpf(BPF_MAP_CREATE) works")


def _btf() -> Check:
    if Path("/sys/kernel/btf/vmlinux").exists():
        return Check("BTF", OK, "/sys/kernel/btf/vmlinux")
    return Check("BTF", WARN, "no kernel BTF (CO-RE unavailable; bcc still works)")


def _bpffs() -> Check:
    from xdp_ovpn.loader import probe

    if probe.bpffs_mounted():
        return Check("bpffs", OK, "mounted at /sys/fs/bpf")
    try:
        probe.mount_bpffs()
    except Exception as exc:
        return Check("bpffs", WARN, f"not mounted and mount failed: {exc}")
    return Check("bpffs", OK, "was not mounted; mounted at /sys/fs/bpf")


def _bcc() -> Check:
    from xdp_ovpn.loader.compile import import_bcc
    from xdp_ovpn.loader.errors import CompileError

    try:
        bcc = import_bcc()
    except CompileError as exc:
        return Check("bcc", FAIL, str(exc))
    version = getattr(bcc, "__version__", "?")
    return Check("bcc", OK, f"bcc {version} from {Path(bcc.__file__).parent}")


def _headers() -> Check:
    from xdp_ovpn.loader.errors import HeadersNotFound
    from xdp_ovpn.loader.headers import find_kernel_headers

    try:
        found = find_kernel_headers()
    except HeadersNotFound as exc:
        return Check("kernel headers", FAIL, str(exc))
    if found.matches_running_kernel:
        return Check("kernel headers", OK, f"{found.version} at {found.path}")
    return Check("kernel headers", WARN, found.warning or f"{found.version} at {found.path}")


def _compile() -> Check:
    from xdp_ovpn.loader.compile import compile_bpf

    try:
        compile_bpf("int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }")
    except Exception as exc:
        return Check("bcc compile", FAIL, f"bcc cannot compile an XDP program: {_one_line(exc)}")
    return Check("bcc compile", OK, "trivial XDP program compiled")


def _openvpn() -> Check:
    binary = shutil.which("openvpn")
    if not binary:
        return Check("openvpn", WARN, "openvpn binary not found (needed for interop tests)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    first = out.splitlines()[0] if out else "?"
    match = re.search(r"OpenVPN (\S+)", first)
    return Check("openvpn", OK, f"{match.group(1) if match else first} at {binary}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# -- probes run inside the scratch namespace ----------------------------------


def _netns_probes(ifname: str) -> list[Check]:
    from xdp_ovpn.loader.probe import probe_xdp_attach

    checks = []
    modes = {}
    for mode in ("native", "generic"):
        try:
            probe_xdp_attach(ifname, mode)
            modes[mode] = True
        except Exception as exc:
            modes[mode] = False
            checks.append(Check(f"XDP {mode}", WARN, _one_line(exc)))
        else:
            checks.append(Check(f"XDP {mode}", OK, f"attached and detached on veth {ifname}"))
    if any(modes.values()):
        best = "native" if modes["native"] else "generic"
        checks.append(Check("XDP attach", OK, f"best mode: {best}"))
    else:
        checks.append(Check("XDP attach", FAIL, "neither native nor generic XDP attach works"))
    checks.append(_afxdp(ifname))
    checks.append(_tun())
    return checks


def _afxdp(ifname: str) -> Check:
    """Bind every RX queue the data path would bind, found the way it finds them."""
    from pyroute2 import IPRoute

    from xdp_ovpn.dataplane.rxqueues import rx_queues
    from xdp_ovpn.dataplane.xsk import probe_afxdp

    with IPRoute() as ipr:
        allocated = ipr.get_links(ifname=ifname)[0].get_attr("IFLA_NUM_RX_QUEUES")
    queues = rx_queues(ifname, allocated)
    modes, failed = set(), []
    for queue in range(queues.in_use):
        try:
            modes.add(probe_afxdp(ifname, queue))
        except Exception as exc:
            failed.append(f"queue {queue}: {_one_line(exc)}")
    where = f"on a plain veth, {queues.describe()} ({queues.source})"
    if not modes:
        return Check("AF_XDP bind", FAIL, f"cannot bind an AF_XDP socket {where}: "
                     + "; ".join(failed))
    note = "" if modes == {"zero-copy"} else " (zero-copy refused by the driver)"
    if failed:
        return Check("AF_XDP bind", WARN, f"{'/'.join(sorted(modes))} mode {where}; "
                     f"left to the UDP socket: {'; '.join(failed)}")
    return Check("AF_XDP bind", OK, f"{'/'.join(sorted(modes))} mode {where}{note}, "
                 "every queue bound")


def _tun() -> Check:
    from xdp_ovpn.dataplane.tun import Tun

    try:
        Tun("xodoctor%d").close()
    except Exception as exc:
        return Check("TUN", FAIL, f"cannot create a TUN device: {_one_line(exc)}")
    return Check("TUN", OK, "/dev/net/tun works")


def _scratch_namespace_checks() -> list[Check]:
    from xdp_ovpn.lab import Lab, LabError

    try:
        with Lab() as lab:
            a, b = lab.add_namespace("doctor"), lab.add_namespace("doctorpeer")
            # No queue options, as `ip link add A type veth peer name B` makes it.
            ifname, _ = lab.link(a, b)
            out = a.run([sys.executable, "-m", "xdp_ovpn.doctor", "--in-netns", ifname],
                        check=False, timeout=120)
    except (LabError, OSError) as exc:
        return [Check("scratch namespace", FAIL, f"cannot build a scratch veth pair: {exc}")]
    try:
        rows = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        reason = _one_line(RuntimeError(out.stderr or "no output"))
        return [Check("scratch namespace", FAIL, f"probe process failed: {reason}")]
    return [Check(**row) for row in rows]


def collect() -> list[Check]:
    """Run every probe; a probe that cannot run reports FAIL instead of raising."""
    checks: list[Check] = []
    probes: list[Callable[[], Check]] = [_bpf_syscall, _btf, _bpffs, _bcc, _headers, _compile]
    for probe in probes:
        try:
            checks.append(probe())
        except Exception as exc:
            checks.append(Check(probe.__name__.strip("_"), FAIL, _one_line(exc)))
    if os.geteuid() != 0:
        checks.append(Check("scratch namespace", FAIL, "needs root to build a scratch namespace"))
    else:
        checks.extend(_scratch_namespace_checks())
    checks.append(_openvpn())
    checks.append(_engine())
    checks.append(_data_path(checks))
    return checks


def _engine() -> Check:
    """Which per-packet engine `run --engine auto` takes (never stops the data path)."""
    from xdp_ovpn.dataplane.engine import native_available, native_stale

    if native_available() and (stale := native_stale()):
        return Check("engine", FAIL, stale)
    if native_available():
        return Check("engine", OK, "native: the C batch engine (xdp_ovpn._native) is built")
    return Check("engine", WARN, "python: the native engine is not built (xdp_ovpn._native "
                 "missing; `scripts/setup.sh env` builds it)")


def _data_path(checks: list[Check]) -> Check:
    """Which data path `run --data-path auto` takes here, and why."""
    problems = missing(checks)
    if problems:
        first = problems[0]
        return Check("data path", WARN, f"socket: `run` falls back to it ({first.name}: "
                     f"{first.detail})")
    return Check("data path", OK, "xdp: `run` steers DATA_V2 to AF_XDP (dco_enabled 1)")


def missing(checks: list[Check]) -> list[Check]:
    """The failed checks that stop the XDP data path, plus any failed prerequisite."""
    by_name = {c.name: c for c in checks}
    out = [c for c in checks if c.status == FAIL]
    out += [Check(name, FAIL, "not probed") for name in REQUIRED if name not in by_name]
    return out


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check'.ljust(width)}  status  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{c.name.ljust(width)}  {c.status.ljust(6)}  {c.detail}" for c in checks]
    return "\n".join(lines)


def run_doctor() -> int:
    checks = collect()
    print(render(checks))
    problems = missing(checks)
    if problems:
        print()
        for c in problems:
            print(f"missing: {c.name}: {c.detail}")
        return 1
    print("\nThe XDP data path can run on this machine.")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--in-netns":
        print(json.dumps([c.__dict__ for c in _netns_probes(sys.argv[2])]))
    else:
        raise SystemExit(run_doctor())
