"""Kernel feature probe for the matrix: run inside a guest (or natively on the host).

Every cell is the outcome of actually doing the thing in the running kernel: compile with bcc
against its headers, load the project's classifier through the verifier, attach native and
generic XDP on a veth in a scratch namespace, bind AF_XDP, open TUN, load the DCO module
(the in-kernel ovpn where the kernel has it, else ovpn-dco-v2 from dkms), run the fast-path
tests. Prints the cells as one JSON line prefixed with RESULT_PREFIX.

    python3 -m xdp_ovpn.vm.guest.probe [--quick]
        (--quick: doctor probes only, for the CI smoke test)
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys

from xdp_ovpn.vm import PROJECT
from xdp_ovpn.vm.kernels import DKMS_DCO, IN_KERNEL_DCO
from xdp_ovpn.vm.matrix import RESULT_PREFIX
from xdp_ovpn.vm.pace import slowdown

# Cells taken as they are from `xdp-ovpn doctor`'s probes.
DOCTOR_CELLS = ("BTF", "kernel headers", "bcc compile", "XDP native", "XDP generic",
                "AF_XDP bind", "TUN")
COMPILE_CELL = "bcc compiles classifier.c"
VERIFIER_CELL = "verifier accepts classifier.c"
# The tests that exercise the XDP fast path; they run unchanged in every kernel.
FAST_PATH_TESTS = ("tests/loader", "tests/dataplane")


def cell(status: str, detail: str) -> dict[str, str]:
    return {"status": status, "detail": detail}


def doctor_cells() -> dict[str, dict[str, str]]:
    from xdp_ovpn.doctor import collect

    checks = {c.name: c for c in collect()}
    out = {}
    for name in DOCTOR_CELLS:
        c = checks.get(name)
        out[name] = cell(c.status, c.detail) if c else cell("FAIL", "not probed by doctor")
    if "scratch namespace" in checks:  # the namespace probes could not run at all
        why = checks["scratch namespace"].detail
        for name in ("XDP native", "XDP generic", "AF_XDP bind", "TUN"):
            out[name] = cell("FAIL", why)
    return out


def classifier_cells() -> dict[str, dict[str, str]]:
    """The project's real XDP program: through clang, then through the kernel verifier."""
    try:
        from xdp_ovpn.loader.classifier import SOURCE, classifier_cflags
        from xdp_ovpn.loader.compile import compile_bpf, load_xdp

        bpf = compile_bpf(SOURCE, classifier_cflags())
    except Exception as exc:  # any failure is the cell's verdict
        why = _one_line(exc)
        return {COMPILE_CELL: cell("FAIL", why),
                VERIFIER_CELL: cell("FAIL", f"not compiled: {why}")}
    compiled = cell("ok", f"{SOURCE.name} compiled against this kernel's headers")
    try:
        load_xdp(bpf, "xdp_classify")
    except Exception as exc:
        return {COMPILE_CELL: compiled, VERIFIER_CELL: cell("FAIL", _one_line(exc))}
    return {COMPILE_CELL: compiled, VERIFIER_CELL: cell("ok", "xdp_classify loaded")}


def dco_module() -> str:
    """The DCO module this kernel would load: its own ovpn (mainline since 6.16) if it has
    one, else ovpn-dco-v2 (built per kernel by the harness with dkms)."""
    own = subprocess.run(["modinfo", "-n", IN_KERNEL_DCO], capture_output=True, text=True)
    return IN_KERNEL_DCO if own.returncode == 0 else DKMS_DCO


def load_dco() -> tuple[str, str | None]:
    """modprobe the DCO module: (module, None) or (module, why it failed)."""
    module = dco_module()
    out = subprocess.run(["modprobe", module], capture_output=True, text=True)
    if out.returncode == 0:
        return module, None
    return module, _one_line(RuntimeError(out.stderr or out.stdout or "modprobe failed"))


def dco_cell() -> dict[str, str]:
    """Can this kernel load a DCO module?"""
    module, error = load_dco()
    if error is None:
        return cell("ok", f"modprobe {module} loaded the module")
    return cell("FAIL", error)


def fast_path_tests_cell() -> dict[str, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs",
           "-m", "not vm and not slow", *FAST_PATH_TESTS]
    # Streamed, not captured: under emulation this takes minutes and should show progress.
    proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.STDOUT, env={**os.environ, "CI": ""})
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stderr.write(line)
        lines.append(line.rstrip("\n"))
    proc.wait()
    lines = [ln for ln in lines if ln.strip()]
    summary = lines[-1].strip("= ") if lines else "no output"
    skipped = group_skips(lines)
    if proc.returncode == 0:
        return cell("warn" if skipped else "ok", f"{summary}; {skipped}" if skipped else summary)
    failed = [m.group(1) for ln in lines if (m := re.match(r"^(?:FAILED|ERROR) (\S+)", ln))]
    detail = f"{summary}; failing: {group_failures(failed)}" if failed else summary
    return cell("FAIL", f"{detail}; {skipped}" if skipped else detail)


def group_skips(lines: list[str]) -> str:
    """pytest -rs lines ("SKIPPED [n] file:line: reason") as "skipped: reason: files (n)"."""
    by_reason: dict[str, dict[str, int]] = {}
    for ln in lines:
        if m := re.match(r"^SKIPPED \[(\d+)\] (?:tests/)?([^:]+):\d+: (.*)$", ln):
            files = by_reason.setdefault(m.group(3), {})
            files[m.group(2)] = files.get(m.group(2), 0) + int(m.group(1))
    return "; ".join(f"skipped, {reason}: " + ", ".join(f"{f} ({n})" for f, n in files.items())
                     for reason, files in by_reason.items())


def group_failures(node_ids: list[str]) -> str:
    """Per test file: the failing test functions (parametrised cases folded), or a count."""
    by_file: dict[str, list[str]] = {}
    for node in node_ids:
        path, _, name = node.removeprefix("tests/").partition("::")
        names = by_file.setdefault(path, [])
        if (base := name.split("[")[0]) not in names:
            names.append(base)
    return "; ".join(f"{path} ({', '.join(names) if len(names) <= 2 else f'{len(names)} tests'})"
                     for path, names in by_file.items())


def probe(quick: bool) -> dict:
    cells = doctor_cells()
    cells["CPU pace"] = cell("ok", f"{slowdown():.1f}x the host's time for the same Python "
                             "work; the lab's waits scale by it")
    if not quick:
        cells |= classifier_cells()
        cells["ovpn-dco loads"] = dco_cell()
        cells["fast-path tests"] = fast_path_tests_cell()
    return {"release": platform.release(), "cells": cells}


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


if __name__ == "__main__":
    result = probe(quick="--quick" in sys.argv[1:])
    print(RESULT_PREFIX + json.dumps(result), flush=True)
