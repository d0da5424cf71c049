"""The `xdp-ovpn` command line: click commands over the layers below."""

from __future__ import annotations

import click

from xdp_ovpn import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xdp-ovpn")
def main() -> None:
    """OpenVPN 2.6 endpoint with an XDP + AF_XDP data channel."""


@main.command()
def doctor() -> None:
    """Probe what this machine offers the XDP data path."""
    from xdp_ovpn.doctor import run_doctor

    raise SystemExit(run_doctor())


from xdp_ovpn.runcmd import run  # noqa: E402

main.add_command(run)

from xdp_ovpn.xdpctl import attach, detach, stats  # noqa: E402

for _command in (attach, detach, stats):
    main.add_command(_command)

from xdp_ovpn.vm.command import vmtest  # noqa: E402

main.add_command(vmtest)

from xdp_ovpn.bench.command import bench  # noqa: E402

main.add_command(bench)


@main.group()
def lab() -> None:
    """Network-namespace labs: the demo."""


from xdp_ovpn.lab.demo import demo  # noqa: E402

lab.add_command(demo)

if __name__ == "__main__":
    main()
