"""`xdp-ovpn bench`: run the comparison and write JSON, Markdown and PNG charts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from xdp_ovpn.bench.scenarios import BY_NAME, select
from xdp_ovpn.dataplane.api import DataPlaneError
from xdp_ovpn.dataplane.engine import ENGINES, check_workers, resolve
from xdp_ovpn.lab import interrupt_on_sigterm, sweep_own_namespaces


def _fail(message: str) -> None:
    click.echo(f"xdp-ovpn bench: {message}", err=True)
    raise SystemExit(1)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: give positive numbers")
    return values


def write_outputs(doc: dict, out: Path, charts: bool) -> list[Path]:
    """bench.json, bench.md and the charts into `out`."""
    from xdp_ovpn.bench import report

    out.mkdir(parents=True, exist_ok=True)
    report.write_json(doc, out / "bench.json")
    (out / "bench.md").write_text(report.markdown(doc))
    written = [out / "bench.json", out / "bench.md"]
    if charts:
        from xdp_ovpn.bench.charts import render

        written += render(doc, out)
    return written


@click.command()
@click.option("--quick", is_flag=True, help="Short tests, 2 repetitions: a few minutes.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (default: bench-results/<time>).")
@click.option("--compare", nargs=2, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="A.json B.json", help="Show two runs' medians side by side, then exit.")
@click.option("--scenarios", metavar="NAMES",
              help=f"Comma-separated subset (baselines always run): {', '.join(BY_NAME)}.")
@click.option("--repetitions", type=click.IntRange(1), help="Override the repetitions.")
@click.option("--seconds", type=click.IntRange(1), help="Override each iperf3 duration.")
@click.option("--peers", "peer_counts", metavar="N,N,...", help="Peer counts for memory per peer.")
@click.option("--handshake-clients", type=click.IntRange(1), help="Clients connecting at once.")
@click.option("--udp-pps", type=click.IntRange(1), help="Offered UDP load, packets/s.")
@click.option("--engine", type=click.Choice(ENGINES), default="auto", show_default=True,
              help="The xdp-ovpn endpoints' per-packet engine (the report names it).")
@click.option("--workers", type=click.IntRange(1), metavar="N",
              help="The xdp-ovpn endpoints' data-plane workers on XDP; the veth then has "
              "max(N, 2) queues in use, so 1 and 2 workers run on the same topology.")
@click.option("--flood", "flood_pps", type=click.IntRange(1), metavar="PPS",
              help="Also TCP up once more while a hostile mix floods the server's port.")
@click.option("--no-charts", is_flag=True, help="Skip the PNG charts (no matplotlib needed).")
@click.option("--per-packet", is_flag=True,
              help="Only time the data path's own code a packet, in-process (no root), then exit.")
def bench(quick: bool, out_dir: Path | None, compare: tuple[Path, Path] | None,
          scenarios: str | None, repetitions: int | None, seconds: int | None,
          peer_counts: str | None, handshake_clients: int | None, udp_pps: int | None,
          engine: str, workers: int | None, flood_pps: int | None, no_charts: bool,
          per_packet: bool) -> None:
    """Compare the data paths on one namespace topology, within one run."""
    from xdp_ovpn.bench import report

    if per_packet:
        from xdp_ovpn.bench import perpacket

        click.echo(perpacket.report(perpacket.measure()), nl=False)
        return
    if compare:
        try:
            a, b = (report.load(p) for p in compare)
        except report.ReportError as exc:
            _fail(str(exc))
        click.echo(report.compare(a, b, str(compare[0]), str(compare[1])), nl=False)
        return
    if os.geteuid() != 0:
        _fail("needs root (network namespaces)")
    if not no_charts:
        from xdp_ovpn.bench.charts import ChartsUnavailable, pyplot

        try:
            pyplot()
        except ChartsUnavailable as exc:
            _fail(f"{exc}; or run with --no-charts")
    from xdp_ovpn.bench.runner import BenchConfig, Runner

    overrides: dict[str, object] = {}
    try:
        if scenarios:
            overrides["scenarios"] = tuple(s.name for s in select(scenarios))
    except ValueError as exc:
        _fail(str(exc))
    if repetitions:
        overrides["repetitions"] = repetitions
        overrides["scale_repetitions"] = repetitions
    if seconds:
        overrides |= {"tcp_seconds": seconds, "udp_seconds": seconds}
    if peer_counts:
        overrides["peer_counts"] = _int_list(peer_counts)
    if handshake_clients:
        overrides["handshake_clients"] = handshake_clients
    if udp_pps:
        overrides["udp_pps"] = udp_pps
    try:
        overrides["engine"] = resolve(engine)
    except DataPlaneError as exc:
        _fail(str(exc))
    if flood_pps:
        overrides["flood_pps"] = flood_pps
    if workers:
        try:
            check_workers(workers, overrides["engine"])  # type: ignore[arg-type]
        except DataPlaneError as exc:
            _fail(str(exc))
        overrides["workers"] = workers
    config = BenchConfig.quick(**overrides) if quick else BenchConfig(**overrides)  # type: ignore[arg-type]
    out = out_dir or Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")
    interrupt_on_sigterm()
    runner = Runner(config, progress=click.echo)
    try:
        doc = runner.run()
    except KeyboardInterrupt:
        sweep_own_namespaces()
        if runner.doc:
            write_outputs(runner.doc, out, charts=False)
            click.echo(f"interrupted; partial results in {out}", err=True)
        raise SystemExit(130) from None
    written = write_outputs(doc, out, charts=not no_charts)
    click.echo("")
    click.echo((out / "bench.md").read_text())
    click.echo("wrote " + ", ".join(str(p) for p in written))
