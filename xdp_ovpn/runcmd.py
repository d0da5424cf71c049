"""`xdp-ovpn run --config FILE`: run as the OpenVPN server, client or p2p peer it describes;
`--check` (or `xdp-ovpn check-config FILE`) only parses, checks and prints the settings."""

from __future__ import annotations

import click

from xdp_ovpn.config import XDP_MODES, ConfigError, effective_settings, load
from xdp_ovpn.dataplane.engine import ENGINES
from xdp_ovpn.dataplane.factory import DATA_PATHS


def _fail(message: str) -> None:
    for line in message.splitlines():
        click.echo(f"xdp-ovpn: {line}", err=True)
    raise SystemExit(1)


def _check(config_path: str, options: tuple[str, ...]) -> None:
    """Every error of the config (one line each, exit 1), or its effective settings."""
    from xdp_ovpn.control.sessionconfig import session_config

    try:
        cfg = load(config_path, options)
        session_config(cfg)  # keys, wrapping and the TLS policy, as `run` would take them
    except ConfigError as exc:
        _fail(str(exc))
    for line in effective_settings(cfg):
        click.echo(line)
    click.echo(f"{config_path}: OK")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--config", "config_path", required=True, metavar="FILE",
              help="An ordinary OpenVPN config file.")
@click.option("--data-path", type=click.Choice(DATA_PATHS), default="auto", show_default=True,
              help="auto: XDP when available, else the socket path.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="The data plane's per-packet loops: native (C) where built, else python "
              "(auto: $XDP_OVPN_ENGINE when set, so a whole test suite can run on either).")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="XDP data-plane worker processes, each holding some RX queues and pinned "
              "to its own CPU (default: the RX queues in use, at most the CPUs; 1 with the "
              "python engine).")
@click.option("--key-derivation", type=click.Choice(["auto", "prf"]), default="auto",
              show_default=True,
              help="prf: never negotiate TLS-EKM; use the legacy TLS 1.0 PRF.")
@click.option("--metrics", "metrics_listen", metavar="ADDR:PORT",
              help="Serve Prometheus metrics on http://ADDR:PORT/metrics.")
@click.option("--xdp-interface", "xdp_interfaces", multiple=True, metavar="IF",
              help="Attach XDP to IF (repeatable; default: every interface the socket's "
              "traffic can use). Config: xdp-interface IF.")
@click.option("--xdp-mode", type=click.Choice(XDP_MODES),
              help="XDP attach mode (default auto: native, else generic). Config: xdp-mode.")
@click.option("--check", is_flag=True,
              help="Parse and check the config, print the effective settings, start nothing.")
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def run(config_path: str, data_path: str, engine: str, workers: int | None, key_derivation: str,
        metrics_listen: str | None, xdp_interfaces: tuple[str, ...], xdp_mode: str | None,
        check: bool, options: tuple[str, ...]) -> None:
    """Run as OpenVPN server, client or TLS p2p peer; extra --options override the file."""
    # Given to the config parser like any --option, so file and command line merge as one.
    options += tuple(w for ifname in xdp_interfaces for w in ("--xdp-interface", ifname))
    options += ("--xdp-mode", xdp_mode) if xdp_mode else ()
    if check:
        _check(config_path, options)
        return
    from xdp_ovpn.control.app import run as run_app
    from xdp_ovpn.control.endpoint import EndpointError
    from xdp_ovpn.control.management import ManagementError
    from xdp_ovpn.control.metrics import MetricsError, parse_listen
    from xdp_ovpn.control.netconfig import NetConfigError
    from xdp_ovpn.control.privdrop import PrivilegeError
    from xdp_ovpn.control.scripts import ScriptError
    from xdp_ovpn.control.status import StatusError
    from xdp_ovpn.dataplane.api import DataPlaneError
    from xdp_ovpn.dataplane.tun import TunError

    try:
        cfg = load(config_path, options)
        metrics = parse_listen(metrics_listen) if metrics_listen else None
    except (ConfigError, MetricsError) as exc:
        _fail(str(exc))
    try:
        code = run_app(cfg, data_path, allow_ekm=key_derivation == "auto", metrics=metrics,
                       reload=lambda: load(config_path, options), engine=engine,
                       workers=workers)
    except (ConfigError, EndpointError, NetConfigError, DataPlaneError, TunError, ScriptError,
            StatusError, ManagementError, MetricsError, PrivilegeError) as exc:
        _fail(str(exc))
    raise SystemExit(code)


@click.command("check-config", context_settings={"ignore_unknown_options": True})
@click.argument("config_path", metavar="FILE")
@click.argument("options", nargs=-1, type=click.UNPROCESSED)
def check_config(config_path: str, options: tuple[str, ...]) -> None:
    """Parse and check FILE, report every error, print the effective settings."""
    _check(config_path, options)
