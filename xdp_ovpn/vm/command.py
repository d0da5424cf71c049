"""`xdp-ovpn vmtest`: run a command in a VM booting another kernel, or the kernel matrix."""

from __future__ import annotations

import sys

import click

DEFAULT_COMMAND = ("python3", "-m", "xdp_ovpn.vm.guest.probe", "--quick")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--kernel", "version", metavar="VERSION",
              help="Debian kernel to boot: 6.1, 6.12, 7.2 (sid) or a full release "
              "like 6.1.0-56-amd64.")
@click.option("--matrix", is_flag=True, help="Run the feature x kernel matrix and write "
              "docs/kernel-matrix.md and .json.")
@click.option("--timeout", default=600.0, show_default=True, metavar="SECONDS",
              help="Kill a guest that runs longer than this.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def vmtest(version: str | None, matrix: bool, timeout: float, command: tuple[str, ...]) -> None:
    """Boot a Debian kernel under qemu and run COMMAND in the project tree inside it.

    \b
      xdp-ovpn vmtest --kernel 6.1                # the smoke probe (BPF, XDP, AF_XDP)
      xdp-ovpn vmtest --kernel 6.12 -- python3 -m pytest tests/loader
      xdp-ovpn vmtest --matrix                    # every kernel, every feature

    The guest root and kernels are built once and cached under /var/cache/xdp-ovpn/vm
    ($XDP_OVPN_VM_CACHE overrides). KVM is used only where it really boots the kernel;
    otherwise TCG ($XDP_OVPN_VM_ACCEL=kvm|tcg forces one). Exits with COMMAND's status.
    """
    from xdp_ovpn.vm import VMError, run_in_vm

    if matrix == bool(version):
        raise click.UsageError("give exactly one of --kernel VERSION or --matrix")
    try:
        if matrix:
            from xdp_ovpn.vm.matrix import run_matrix

            raise SystemExit(run_matrix(echo=sys.stderr))
        result = run_in_vm(version, list(command or DEFAULT_COMMAND), timeout=timeout,
                           echo=sys.stdout)
    except VMError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"vmtest: {version} ({result.accel}) exit {result.returncode} "
               f"in {result.seconds:.0f} s", err=True)
    raise SystemExit(result.returncode)
