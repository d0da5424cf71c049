"""The `xdp-ovpn` command line: click commands over the layers below.

Each command's code lives in its own module; this file only assembles them.
"""

from __future__ import annotations

import click

from xdp_ovpn import __version__
from xdp_ovpn.bench.command import bench
from xdp_ovpn.demo import demo
from xdp_ovpn.runcmd import run
from xdp_ovpn.vm.command import vmtest
from xdp_ovpn.xdpctl import attach, detach, stats


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xdp-ovpn")
def main() -> None:
    """OpenVPN 2.6 endpoint with an XDP + AF_XDP data channel."""


@main.command()
def doctor() -> None:
    """Probe what this machine offers the XDP data path."""
    from xdp_ovpn.doctor import run_doctor

    raise SystemExit(run_doctor())


@main.group()
def lab() -> None:
    """Network-namespace labs: the demo."""


for _command in (run, attach, detach, stats, vmtest, bench):
    main.add_command(_command)
lab.add_command(demo)

if __name__ == "__main__":
    main()
