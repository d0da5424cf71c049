"""The feature x kernel matrix: the probe (xdp_ovpn.vm.guest.probe) run natively on the host
kernel and inside a guest for each Debian kernel; then the DCO interop run in each guest with
a DCO module (6.1: ovpn-dco-v2 from dkms with openvpn 2.6; 7.2: the in-kernel ovpn with sid's
openvpn 2.7), and the data-path comparison in each of those guests. Written as
docs/kernel-matrix.md and .json.

Every cell comes from doing the thing in that kernel, never from a version check.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

from xdp_ovpn.vm import PROJECT, VMError, prepare, run_in_vm
from xdp_ovpn.vm.report import render_markdown

GUEST_KERNELS = ("6.1", "6.12", "7.2")
# 6.1: openvpn-dco-dkms builds for it (not for 6.12); 7.2 ships ovpn itself (sid root).
DCO_KERNELS = ("6.1", "7.2")
PROBE = ["python3", "-m", "xdp_ovpn.vm.guest.probe"]
DCO_INTEROP = ["python3", "-m", "xdp_ovpn.vm.guest.dco_interop"]
COMPARE = ["python3", "-m", "xdp_ovpn.vm.guest.compare", "2"]
RESULT_PREFIX = "XO-MATRIX "
GUEST_TIMEOUT = 3600.0
DOCS = PROJECT / "docs"
DCO_BUILD = "DCO module (in-kernel ovpn, or ovpn-dco by dkms)"
# The cells the XDP data path cannot do without: a failure here fails the command ("warn",
# e.g. tests skipped for a named reason, does not).
REQUIRED = ("bcc compile", "bcc compiles classifier.c", "verifier accepts classifier.c",
            "AF_XDP bind", "fast-path tests")


def run_matrix(echo: TextIO | None = None, kernels: tuple[str, ...] = GUEST_KERNELS,
               interop: bool = True) -> int:
    """Probe the host and every guest kernel (then DCO interop and the comparison); write
    the report; 1 if a required cell or an interop check failed."""
    columns = [_host_column(echo)]
    columns += [_guest_column(version, echo) for version in kernels]
    report: dict = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "columns": columns,
    }
    if interop:
        report["dco_interop"] = [_guest_script(version, DCO_INTEROP, echo)
                                 for version in DCO_KERNELS if version in kernels]
        report["comparisons"] = [_guest_script(version, COMPARE, echo)
                                 for version in DCO_KERNELS if version in kernels]
    DOCS.mkdir(exist_ok=True)
    (DOCS / "kernel-matrix.json").write_text(json.dumps(report, indent=1) + "\n")
    (DOCS / "kernel-matrix.md").write_text(render_markdown(report))
    failed = [f"{c['kernel']}: {name}" for c in columns for name in REQUIRED
              if c["cells"].get(name, {}).get("status") not in ("ok", "warn")]
    failed += [f"{c['kernel']}: no XDP attach mode works" for c in columns
               if not _any_attach(c["cells"])]
    if interop:
        failed += _interop_failures(report["dco_interop"])
    for line in failed:
        print(f"matrix: FAIL {line}", file=sys.stderr)
    return 1 if failed else 0


def _interop_failures(runs: list[dict]) -> list[str]:
    """One line per failed check (or run that gave no result), named by its kernel."""
    failed = []
    for run in runs:
        where = f"DCO interop ({run['kernel']})"
        if run.get("error"):
            failed.append(f"{where}: {run['error']}")
            continue
        failed += [f"{where}: {p['pair']}: {c['check']}" for p in run["result"]
                   for c in p["checks"] if c["status"] != "ok"]
    return failed


def _guest_script(version: str, command: list[str], echo: TextIO | None) -> dict:
    """Run a guest module that prints one RESULT_PREFIX line; keep its parsed result."""
    try:
        run = run_in_vm(version, command, timeout=GUEST_TIMEOUT, echo=echo)
    except VMError as exc:
        return {"kernel": version, "where": "not booted", "error": str(exc)}
    where = run.accel
    found = [ln for ln in run.output.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not found:
        tail = [ln for ln in run.output.splitlines() if ln.strip()][-1:] or ["no output"]
        return {"kernel": version, "where": where, "error": f"no result: {tail[0]}"}
    return {"kernel": version, "where": where,
            "result": json.loads(found[-1].removeprefix(RESULT_PREFIX))}


def _any_attach(cells: dict) -> bool:
    return any(cells.get(f"XDP {m}", {}).get("status") == "ok" for m in ("native", "generic"))


def _host_column(echo: TextIO | None) -> dict:
    started = time.monotonic()
    out = subprocess.run([sys.executable, *PROBE[1:]], cwd=PROJECT, capture_output=True,
                         text=True)
    if echo is not None:
        echo.write(out.stderr)
    column = _column(f"{platform.release()} (host)", "host, native", out.stdout,
                     time.monotonic() - started)
    column["cells"][DCO_BUILD] = {"status": "n/a", "detail": "not attempted on the host: no "
                                  "headers for the running kernel, no module loading"}
    return column


def _guest_column(version: str, echo: TextIO | None) -> dict:
    try:
        _root, kernel = prepare(version)
        run = run_in_vm(version, PROBE, timeout=GUEST_TIMEOUT, echo=echo)
    except VMError as exc:
        return {"kernel": version, "where": "guest", "seconds": 0,
                "cells": {"boot": {"status": "FAIL", "detail": str(exc)}}}
    column = _column(kernel.release, f"guest, {run.accel}", run.output, run.seconds)
    column["cells"][DCO_BUILD] = {"status": "ok" if kernel.dco["built"] else "FAIL",
                                  "detail": kernel.dco["detail"]}
    return column


def _column(kernel: str, where: str, output: str, seconds: float) -> dict:
    results = [ln for ln in output.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not results:
        tail = [ln for ln in output.splitlines() if ln.strip()][-1:] or ["no output"]
        cells = {"boot": {"status": "FAIL", "detail": f"probe gave no result: {tail[0]}"}}
    else:
        cells = json.loads(results[-1].removeprefix(RESULT_PREFIX))["cells"]
    return {"kernel": kernel, "where": where, "seconds": round(seconds), "cells": cells}


def _commit() -> str:
    out = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"
