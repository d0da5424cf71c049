"""`xdp-ovpn attach | detach | stats`: the XDP classifier from the command line."""

from __future__ import annotations

import ipaddress
import signal
import time

import click

from xdp_ovpn import config

ANY = {4: "0.0.0.0", 6: "::"}


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT, [V6ADDR]:PORT, or :PORT / PORT for any address (both families); ADDR is
    an IP address, as the classifier keys its listeners."""
    try:
        host, port = config.parse_listen(text, any_address=True)
        if host:
            ipaddress.ip_address(host)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not ADDR:PORT", param_hint="--listen") from None
    return host, port


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.command()
@click.option("--interface", "-i", required=True, help="Underlay interface.")
@click.option(
    "--listen", "-l", "listens", multiple=True, required=True, metavar="ADDR:PORT",
    help="OpenVPN listener to classify for (repeatable; :PORT for any address).",
)  # fmt: skip
@click.option(
    "--mode", type=click.Choice(["native", "generic"]), help="Default: native, then generic."
)
@click.option("--observe", is_flag=True, help="Classify and count only; steer nothing.")
@click.option(
    "--control-limit", type=(int, int, int, int),
    metavar="SOURCE_RATE SOURCE_BURST GLOBAL_RATE GLOBAL_BURST",
    help="Token-bucket control packets per source address:port and all together (packets/s, "
    "bucket size). Off by default here: without a data plane no peer is known as connected.",
)  # fmt: skip
def attach(
    interface: str,
    listens: tuple[str, ...],
    mode: str | None,
    observe: bool,
    control_limit: tuple[int, int, int, int] | None,
) -> None:
    """Attach the classifier in the foreground; it detaches on exit, even on SIGKILL."""
    from xdp_ovpn.loader.classifier import Classifier
    from xdp_ovpn.loader.errors import LoaderError
    from xdp_ovpn.loader.maps import ControlLimits

    targets = [parse_listen(text) for text in listens]
    try:
        limits = ControlLimits(*control_limit) if control_limit else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--control-limit") from None
    try:
        classifier = Classifier()
    except LoaderError as exc:
        raise _fail(exc) from None
    with classifier:
        try:
            for host, port in targets:
                for addr in [host] if host else list(ANY.values()):
                    classifier.maps.add_listener(addr, port)
            classifier.maps.set_observe(observe)
            if limits:
                classifier.maps.set_control_limits(limits)
            att = classifier.attach(interface, mode)
        except LoaderError as exc:
            raise _fail(exc) from None
        how = "BPF link" if att.link_fd is not None else "netlink (no BPF link support)"
        click.echo(
            f"attached to {interface} ({att.mode}, {how}, prog id {att.prog_id})"
            f"{', observe only' if observe else ''}; maps pinned at {classifier.pinned}",
        )
        _wait_for_stop()
    click.echo(f"detached from {interface}")


def _wait_for_stop() -> None:
    stop = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    signal.sigwait(stop)


@click.command()
@click.option("--interface", "-i", required=True)
def detach(interface: str) -> None:
    """Remove the XDP program from an interface, whoever attached it."""
    from xdp_ovpn.loader.attach import detach_interface
    from xdp_ovpn.loader.classifier import pin_dir, remove_pins
    from xdp_ovpn.loader.errors import LoaderError

    try:
        removed = detach_interface(interface)
    except LoaderError as exc:
        raise _fail(exc) from None
    remove_pins(pin_dir(interface))
    click.echo(f"detached from {interface}" if removed else f"nothing attached to {interface}")


@click.command()
@click.option("--interface", "-i", required=True)
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(0.1))
@click.option("--top", default=10, show_default=True, help="How many peers to list.")
def stats(interface: str, watch: bool, interval: float, top: int) -> None:
    """Counters per opcode and per verdict, and the busiest peers."""
    from xdp_ovpn.loader.classifier import open_attached
    from xdp_ovpn.loader.errors import LoaderError

    try:
        maps = open_attached(interface)
    except LoaderError as exc:
        raise _fail(exc) from None
    try:
        while True:
            text = render_stats(maps, top)
            if not watch:
                click.echo(text)
                return
            click.clear()
            click.echo(f"{interface}  {time.strftime('%H:%M:%S')}\n{text}")
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
    except LoaderError as exc:
        raise _fail(exc) from None
    finally:
        maps.close()


def render_stats(maps, top: int) -> str:
    """Counters as aligned text: opcodes, verdicts, then peers by bytes."""
    from xdp_ovpn.loader.maps import opcode_name

    lines = ["observe mode: nothing is steered or dropped"] if maps.observe else []
    if maps.authoritative:
        lines.append("data plane authoritative: DATA for peers it does not hold is dropped")
    limits = maps.control_limits
    if limits:
        lines.append(f"control limits: {limits.source_rate}/s burst {limits.source_burst} a "
                     f"source, {limits.global_rate}/s burst {limits.global_burst} in all")
    lines.append("opcode                     packets")
    for op, n in maps.opcode_counts().items():
        if n:
            lines.append(f"  {opcode_name(op):<24} {n:>9}")
    lines.append("verdict                    packets")
    for verdict, n in maps.verdict_counts().items():
        if n:
            lines.append(f"  {verdict.name.lower():<24} {n:>9}")
    peers = sorted(maps.peer_counts().items(), key=lambda kv: kv[1].bytes, reverse=True)
    lines.append("peer-id      packets        bytes")
    for peer_id, c in peers[:top]:
        lines.append(f"  {peer_id:<8} {c.packets:>9} {c.bytes:>12}")
    return "\n".join(lines)
