"""The `xdp-ovpn` command line: click commands over the layers below.

Each command's code lives in its own module; this file only assembles them.
"""

from __future__ import annotations

from pathlib import Path

import click

from xdp_ovpn import __version__
from xdp_ovpn.bench.command import bench
from xdp_ovpn.demo import demo
from xdp_ovpn.optionscmd import options
from xdp_ovpn.runcmd import check_config, run
from xdp_ovpn.vm.command import vmtest
from xdp_ovpn.xdpctl import attach, detach, stats


class _Main(click.Group):
    """Also takes openvpn's own forms: `xdp-ovpn FILE [--option ...]` and
    `xdp-ovpn --config FILE [--option ...]` mean `xdp-ovpn run --config FILE ...`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] == "--config":
            args = ["run", *args]
        elif args and args[0] not in self.commands and _looks_like_config(args[0]):
            args = ["run", "--config", *args]
        return super().parse_args(ctx, args)


def _looks_like_config(word: str) -> bool:
    return not word.startswith("-") and (word.endswith((".conf", ".ovpn")) or Path(word).is_file())


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xdp-ovpn")
def main() -> None:
    """OpenVPN 2.6 endpoint with an XDP + AF_XDP data channel.

    `xdp-ovpn FILE` runs FILE like `openvpn FILE` (same as `xdp-ovpn run --config FILE`)."""


@main.command()
def doctor() -> None:
    """Probe what this machine offers the XDP data path."""
    from xdp_ovpn.doctor import run_doctor

    raise SystemExit(run_doctor())


@main.group()
def lab() -> None:
    """Network-namespace labs: the demo."""


for _command in (run, check_config, options, attach, detach, stats, vmtest, bench):
    main.add_command(_command)
lab.add_command(demo)

if __name__ == "__main__":
    main()
